#!/usr/bin/python3
"""Phones' view benchmark: how long calls into and from each phone fail on failover and failback.

In the testbed: master (198.18.0.1) and slave (.2) each run a real SIP registrar and proxy
(kamailio, tests/sip_registrar.py) as their telephony, started and stopped by the wazo-service
stand-in with Asterisk's start-up delay; N phones (tests/phone.py: Yealink's primary/backup
behaviour read from wazo-provd-plugins, plugins/wazo_yealink/v86/templates/base.tpl) register
with a random phase, answer calls and place their own; a caller calls every phone through
both servers every round. The master dies silently (its link cut: all its traffic dropped),
stays dead until every phone is on the slave, then returns.

Measured from a capture on the bridge (tcpdump, parsed by tests/sip_capture.py), not from
the phones' word, per phone and trial:
- calls in fail: total time during which calls into the phone failed (no 200 through any
  server); calls out fail: the same for the phone's own calls (primary first, then backup);
- on failover, the server's part (link cut -> the slave's registrar first answers SIP) and
  the phone's part (the rest: waiting for its next registration, which finds the master dead);
- on failback, the slave's stop (master back -> the slave's registrar last answers: both nodes
  serve meanwhile), and per node: how long calls into the phone through the master alone fail
  (a caller reaching the master only, as an incoming trunk on it), and of that the part after
  the slave stopped (the master-only gap: nobody can reach the phone).

The phones' renewal margin and retransmissions are options (--refresh-margin, --retry-counts),
for the sweep of what the 300 s promise depends on.

Checkers side by side: Wazo's original xivo-check-master-status (xivo-config's
sbin/xivo-check-master-status: every minute `ping -c 3 -i 10`, no reply -> start, else stop),
and wazo-ha's check (default [check] settings, failback wait on or off), at the documented
expiry (180/240/300 s) and lower values.

Every duration (check intervals, cron period, expiry, phone timers, Asterisk's delay, probe
rounds) can be scaled by one factor (--scale): the table says so and prints real-time seconds
(measured / scale); a run at --scale 1 validates the scaled figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, '..', 'tests'), os.path.join(HERE, '..')]

from phone import Timers  # noqa: E402
from phones_helpers import Phones  # noqa: E402
from sipp_phones import SippPhones  # noqa: E402
from sip_capture import (Capture, attempts, failed_time, first_from, last_from,  # noqa: E402
                         percentile, sip_messages)
from testbed import Cron, Testbed, calls_after, cleanup_leftovers  # noqa: E402

DOCUMENTED = (180, 240, 300)
SCENARIOS = {
    # name: (checker, (min, default, max) expiry, failback wait)
    'original-300': ('original', DOCUMENTED, False),
    'ours-300-nowait': ('ours', DOCUMENTED, False),
    'ours-300': ('ours', DOCUMENTED, True),
    'original-120': ('original', (60, 90, 120), False),
    'ours-120': ('ours', (60, 90, 120), True),
    'ours-60': ('ours', (30, 45, 60), True),
}
CHECK = {'probe_interval': 5, 'down_after': 15, 'up_after': 60, 'run_for': 55,
         'probe_timeout': 2, 'failback_phones_timeout': 120, 'failback_phones_margin': 30}
CRON_PERIOD = 60

# xivo-config's sbin/xivo-check-master-status, its ping and its decision, periods scaled
ORIGINAL_CHECK = '''\
#!/bin/sh
ping -n -q -c 3 -i "$2" -W "$2" "$1" >/dev/null 2>&1
status=$?
if [ ! -f /var/lib/wazo/is-secondary ]; then
    exit 0
elif [ $status -eq 0 ]; then
    xivo-manage-slave-services stop
else
    xivo-manage-slave-services start
fi
'''


def original_cron(node, master_ip: str, period: float, ping_interval: float) -> Cron:
    """Starts the original check on the slave every `period` seconds, as its cron line did."""
    script = os.path.join(node.root, 'original-check')
    with open(script, 'w') as f:
        f.write(ORIGINAL_CHECK)
    os.chmod(script, 0o755)
    return Cron(node, period, [script, master_ip, f'{ping_interval:g}'])


def phone_timers(args) -> Timers:
    """The phones' timers in real time: Yealink's defaults, the renewal margin and the
    retransmissions as asked."""
    return Timers(refresh_margin=args.refresh_margin, retry_counts=args.retry_counts)


def scaled_expiry(expiry: tuple[int, int, int], scale: float) -> tuple[int, int, int]:
    return tuple(max(1, round(v * scale)) for v in expiry)


def wait_until(predicate, timeout: float, every: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def trial(bed, master, slave, phones_node, args, scenario: str, number: int, workdir: str) -> dict:
    checker, expiry, wait = SCENARIOS[scenario]
    s = args.scale
    low, default, high = scaled_expiry(expiry, s)
    timers = dataclasses.replace(phone_timers(args).scaled(s), call_every=args.round * s)
    refresh = high - min(timers.refresh_margin, high / 2)  # phones ask 3600: granted = max
    # the slave is on standby, the master serves
    assert wait_until(lambda: slave.services_state() == 'base' and not slave.registrar_running(),
                      (CRON_PERIOD + CHECK['up_after'] + high + 120) * s + 30), \
        'the slave never went back to standby'
    capture = Capture(bed, os.path.join(workdir, f'{scenario}-{number}.pcap'))
    seed = number * 7919 + len(scenario)
    if args.stack == 'sipp':
        names = [f'sipp{i + 1}' for i in range(args.phones)]
        sipp = SippPhones(phones_node, [master, slave], args.phones, timers, spread=refresh)
        phones = Phones(phones_node, [master, slave], 0, timers, call_in_every=args.round * s,
                        seed=seed, call_users=names)
    else:
        names = [f'phone{i + 1}' for i in range(args.phones)]
        sipp = contextlib.nullcontext()
        phones = Phones(phones_node, [master, slave], args.phones, timers, spread=refresh,
                        call_in_every=args.round * s, seed=seed)
    try:
        with sipp, phones:
            def all_on(server, since):
                if args.stack == 'sipp':  # the registrar's word (SIPp logs no events)
                    if server is master and since:  # back: the slave let them go
                        return slave.services_state() == 'base'
                    return set(server.registered()) >= set(names)
                done = {e['phone'] for e in phones.events('registered')
                        if e['server'] == server.ip and e['t'] > since}
                return done >= set(names)
            assert wait_until(lambda: all_on(master, 0), refresh + 30), 'phones not registered'
            time.sleep(refresh + random.uniform(0, args.round * s))  # the phases are random
            down = time.time()
            master.link(False)
            bound = (CRON_PERIOD + CHECK['down_after'] + args.asterisk_delay + high
                     + timers.request_timeout / s + 120) * s + 30
            moved = wait_until(lambda: all_on(slave, down), bound, every=0.5)
            time.sleep(args.hold * s)
            up = time.time()
            master.link(True)
            bound = (CRON_PERIOD + CHECK['up_after'] + CHECK['failback_phones_timeout']
                     + CHECK['failback_phones_margin'] + 2 * high
                     + Timers().fallback_timeout) * s + 60
            back = wait_until(lambda: all_on(master, up) and slave.services_state() == 'base'
                              and not slave.registrar_running(), bound, every=0.5)
            time.sleep(args.hold * s)
            end = time.time()
            # the phones answer the calls of the window's last round before they stop
            time.sleep(args.round * s + 1)
    finally:
        capture.close()
    messages = sip_messages(capture.path)
    calls_in, calls_out = attempts(messages, 'in'), attempts(messages, 'out')
    via_master = attempts(messages, 'in', via=master.ip)
    answered = first_from(messages, slave.ip, down)
    server = (answered - down) if answered else float('inf')
    stopped = last_from(messages, slave.ip, end, up)
    started = calls_after(slave, 'wazo-service start', down)
    stop_asked = calls_after(slave, 'wazo-service stop wazo', up)
    rows = []
    for name in sorted(calls_in, key=lambda n: int(''.join(c for c in n if c.isdigit()))):
        fo_in, fo_in_cut = failed_time(calls_in.get(name, []), down, up)
        fb_in, fb_in_cut = failed_time(calls_in.get(name, []), up, end)
        if name in calls_out:
            fo_out = failed_time(calls_out[name], down, up)[0] / s
            fb_out = failed_time(calls_out[name], up, end)[0] / s
        else:  # SIPp phones place no calls
            fo_out = fb_out = None
        # the per-node view: a caller reaching the master only (an incoming trunk on it)
        fb_master, fb_master_cut = failed_time(via_master.get(name, []), up, end)
        gap, gap_cut = failed_time(via_master.get(name, []), stopped or end, end)
        rows.append({'phone': name, 'failover_in': fo_in / s, 'failover_out': fo_out,
                     'phone_part': max(0.0, fo_in - server) / s if fo_in else 0.0,
                     'failback_in': fb_in / s, 'failback_out': fb_out,
                     'failback_in_master': fb_master / s, 'master_only_gap': gap / s,
                     'cut': fo_in_cut or fb_in_cut or fb_master_cut or gap_cut})
    result = {'scenario': scenario, 'trial': number, 'scale': s, 'stack': args.stack,
              'refresh_margin': args.refresh_margin,
              'request_timeout': phone_timers(args).request_timeout,
              'down': down, 'up': up, 'end': end,
              'server_part': server / s,
              'slave_stopped_after': ((stopped - up) / s) if stopped else None,
              'start_asked': ((started[0] - down) / s) if started else None,
              'stop_asked': ((stop_asked[0] - up) / s) if stop_asked else None,
              'all_moved': moved, 'all_back': back, 'phones': rows,
              'attempts_in': sum(len(v) for v in calls_in.values()),
              'attempts_out': sum(len(v) for v in calls_out.values())}
    if not os.environ.get('PHONES_KEEP_PCAP'):
        os.unlink(capture.path)
    else:
        result['pcap'] = capture.path
    return result


def run_scenario(args, scenario: str, results_file: str) -> list[dict]:
    checker, expiry, wait = SCENARIOS[scenario]
    s = args.scale
    low, default, high = scaled_expiry(expiry, s)
    base = tempfile.mkdtemp(prefix='wazo-ha-bench-phones-')
    os.chmod(base, 0o755)
    bed = Testbed(base, None)
    cron = None
    out = []
    try:
        bed.start()
        master = bed.add_node('master', 1, with_postgres=False)
        slave = bed.add_node('slave', 2, with_postgres=False)
        phones_node = bed.add_node('phones', 10, with_postgres=False)
        for node in (master, slave):
            node.use_sip_registrar(low, high, default, delay=args.asterisk_delay * s)
        master.run('wazo-service', 'start')
        check = {k: f'{v * s:g}' for k, v in CHECK.items()}
        check['probe_timeout'] = f'{max(0.2, CHECK["probe_timeout"] * s):g}'
        check['failback_phones'] = 'true' if wait else 'false'
        slave.write_settings(check=check, sip={'min_expiry': low, 'default_expiry': default,
                                               'max_expiry': high})
        r = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address',
                       master.ip)
        assert r.returncode == 0, r.stderr
        slave.run('wazo-service', 'start')
        if checker == 'ours':
            cron = Cron(slave, CRON_PERIOD * s)
        else:
            slave.run('wazo-service', 'disable')
            slave.run('wazo-service', 'stop', 'wazo')
            cron = original_cron(slave, master.ip, CRON_PERIOD * s, 10 * s)
        cron.start()
        for number in range(1, args.trials + 1):
            result = trial(bed, master, slave, phones_node, args, scenario, number, base)
            out.append(result)
            with open(results_file, 'a') as f:
                f.write(json.dumps(result) + '\n')
            fo = [p['failover_in'] for p in result['phones']]
            fb = [p['failback_in'] for p in result['phones']]
            print(f'{scenario} trial {number}: server part {result["server_part"]:.1f} s, calls in '
                  f'fail on failover max {max(fo):.1f} s, on failback max {max(fb):.1f} s',
                  flush=True)
    finally:
        if cron:
            cron.close()
        bed.close()
        if not os.environ.get('PHONES_KEEP_PCAP'):
            shutil.rmtree(base, ignore_errors=True)
    return out


def stats(values: list[float]) -> str:
    if not values:
        return '-'
    return (f'{percentile(values, 50):.0f} / {percentile(values, 95):.0f} / '
            f'{max(values):.0f}')


def table(results: list[dict], phones: int) -> str:
    lines = ['| scenario | checker | expiry min/default/max (s) | phones renew before expiry / '
             'request fails after (s) | failback wait | trials x phones '
             '| scale | server part (s) p50 / max | calls in fail, failover (s) p50 / p95 / max '
             '| phone part (s) | own calls fail, failover (s) | calls in fail, failback (s) '
             '| own calls fail, failback (s) | calls in via the master only fail, failback (s) '
             '| of which after the slave stopped (s) | both nodes serve: master back to the '
             "slave's last SIP (s) | REGISTER/s per 1000 phones |",
             '|' + '---|' * 17]
    by = {}
    for r in results:
        timers = (r.get('refresh_margin', Timers().refresh_margin),
                  r.get('request_timeout', Timers().request_timeout))
        by.setdefault((r['scenario'], r['scale'], r.get('stack', 'model'), timers), []).append(r)
    for (scenario, scale, stack, (margin, timeout)), rs in by.items():
        checker, expiry, wait = SCENARIOS[scenario]
        rows = [p for r in rs for p in r['phones']]
        servers = [r['server_part'] for r in rs]
        stops = [r['slave_stopped_after'] for r in rs if r['slave_stopped_after'] is not None]
        refresh = expiry[2] - min(margin, expiry[2] / 2)
        cut = sum(1 for p in rows if p['cut'])
        lines.append(
            f'| {scenario}{" (SIPp phones)" if stack == "sipp" else ""} | {checker} | '
            f'{"/".join(map(str, expiry))} | {margin:g} / {timeout:g} | '
            f'{"on" if wait else "off"} | {len(rs)} x {len(rs[0]["phones"])} | {scale:g} | '
            f'{statistics.median(servers):.0f} / {max(servers):.0f} | '
            f'{stats([p["failover_in"] for p in rows])}{" (cut: %d)" % cut if cut else ""} | '
            f'{stats([p["phone_part"] for p in rows])} | '
            f'{stats([p["failover_out"] for p in rows if p["failover_out"] is not None])} | '
            f'{stats([p["failback_in"] for p in rows])} | '
            f'{stats([p["failback_out"] for p in rows if p["failback_out"] is not None])} | '
            f'{stats([p["failback_in_master"] for p in rows if "failback_in_master" in p])} | '
            f'{stats([p["master_only_gap"] for p in rows if "master_only_gap" in p])} | '
            f'{stats(stops)} | {1000 / refresh:.1f} |')
    return '\n'.join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--scenarios', default=','.join(SCENARIOS),
                        help='comma-separated, from: ' + ', '.join(SCENARIOS))
    parser.add_argument('--trials', type=int, default=3)
    parser.add_argument('--phones', type=int, default=20)
    parser.add_argument('--scale', type=float, default=0.1,
                        help='every duration times this (1 = real time); figures are printed '
                             'in real-time seconds')
    parser.add_argument('--round', type=float, default=4.0,
                        help='seconds (real time) between two call attempts into / from a phone')
    parser.add_argument('--asterisk-delay', type=float, default=10.0,
                        help="seconds (real time) Asterisk takes to answer SIP after its start")
    parser.add_argument('--hold', type=float, default=20.0,
                        help='seconds (real time) the master stays dead once every phone is on '
                             'the slave, and the run goes on once all are back')
    parser.add_argument('--refresh-margin', type=float, default=Timers().refresh_margin,
                        help='seconds (real time) before the granted expiry a phone renews '
                             '(0: at expiry; at most half the expiry)')
    parser.add_argument('--retry-counts', type=int, default=Timers().retry_counts,
                        help='retransmissions before a REGISTER or call fails: 3 = 7.5 s, '
                             "5 = 31.5 s (about RFC 3261's timer B, 32 s)")
    parser.add_argument('--stack', choices=('model', 'sipp'), default='model',
                        help="the phones: tests/phone.py's model, or SIPp (tests/sipp_phones.py, "
                             'the cross-check: calls into the phones only)')
    parser.add_argument('--results', default=None,
                        help='JSON lines of every trial, appended (default: a temp file)')
    parser.add_argument('--table-only', metavar='RESULTS',
                        help='print the table of a results file and exit')
    args = parser.parse_args()
    if args.table_only:
        with open(args.table_only) as f:
            print(table([json.loads(line) for line in f if line.strip()], args.phones))
        return
    scenarios = [s for s in args.scenarios.split(',') if s]
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        parser.error('unknown scenario: ' + ', '.join(unknown))
    # stopped by timeout or kill: still tear the nodes down (finally blocks)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    cleanup_leftovers()
    results_file = args.results or tempfile.mkstemp(prefix='wazo-ha-bench-phones-',
                                                    suffix='.jsonl')[1]
    print(f'results: {results_file}', flush=True)
    results = []
    for scenario in scenarios:
        try:
            results += run_scenario(args, scenario, results_file)
        except AssertionError as e:  # say it, keep what the other scenarios measure
            print(f'{scenario}: FAILED: {e}', flush=True)
    print()
    print(table(results, args.phones))


if __name__ == '__main__':
    main()
