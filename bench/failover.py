#!/usr/bin/python3
"""Failover benchmark: detection times and false failovers, in the two-node testbed.

cron is simulated by starting xivo-check-master-status on the slave every 60 s, with the
default [check] settings (probe every 5 s, down after 15 s, up after 60 s, runs of 55 s).
"Master dies" = its link goes down (from the hub: the master cannot tell).

- failover time: link down -> `wazo-service start` on the slave (the stand-in's timestamp);
- failback time: link up -> `wazo-service stop wazo`;
- false failovers: 30% random loss of the master's packets into the slave (nft, netem is
  not available here) for a while, and repeated 10 s outages; the same conditions are
  watched by a naive checker written here as the original behaves (every minute, three
  pings 10 s apart; all three lost = failover);
- witness: the slave's own link cut, with a witness node set: no failover expected;
- Asterisk dead, host up: with `[check] sip_options = udp:5060` (the other settings default),
  a real SIP server (kamailio) on the master is killed while the machine answers ping:
  kill -> `wazo-service start`; started again -> `wazo-service stop wazo`.
"""

import argparse
import os
import random
import signal
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, '..', 'tests'), os.path.join(HERE, '..')]

from testbed import Cron, Testbed, calls_after, cleanup_leftovers, sh, wait_call  # noqa: E402

DEFAULTS = {'probe_interval': '5', 'down_after': '15', 'up_after': '60', 'run_for': '55',
            'probe_timeout': '2'}

NAIVE_CHECKER = r'''
# the original logic: every minute, 3 pings 10 s apart; all lost -> failover
while true; do
  start=$(date +%s)
  lost=0
  for i in 1 2 3; do
    ping -n -q -c 1 -W 1 "$MASTER" >/dev/null 2>&1 || lost=$((lost + 1))
    [ $i -lt 3 ] && sleep 10
  done
  [ $lost -eq 3 ] && echo "$(date +%s.%N) failover" >> "$OUT"
  sleep $((60 - ($(date +%s) - start)))
done
'''


def wait_standby(slave, timeout=200):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if slave.services_state() in ('base', 'none') and \
                os.path.exists(slave.host_path('/var/lib/wazo/disabled')):
            return True
        time.sleep(1)
    return False


def loss(node, percent, source):
    if percent:
        sh(*node.nsenter(['nft', '-f', '-']), input=f'''
table inet whabench {{
  chain input {{ type filter hook input priority 0; policy accept;
    ip saddr {source} numgen random mod 100 < {percent} drop
  }}
}}''')
    else:
        sh(*node.nsenter(['nft', 'delete', 'table', 'inet', 'whabench']), check=False)


def print_trials(rows):
    """The timed trials as a table: (measure, times, target) per row."""
    print()
    print('| measure | trials | median (s) | worst (s) | best (s) | target |')
    print('|---|---|---|---|---|---|')
    for measure, times, target in rows:
        finite = [x for x in times if x != float('inf')] or [float('inf')]
        print(f'| {measure} | {len(times)} | {statistics.median(times):.1f} | {max(times):.1f} | '
              f'{min(finite):.1f} | {target} |')


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--trials', type=int, default=20)
    parser.add_argument('--loss-minutes', type=float, default=10)
    parser.add_argument('--outages', type=int, default=5)
    parser.add_argument('--naive-checkers', type=int, default=1,
                        help='independent naive checkers watching the same lossy link (more '
                             'checker-minutes for its rare false failovers to show)')
    parser.add_argument('--only-loss', action='store_true',
                        help='skip the timed trials, the outages and the witness scenario')
    parser.add_argument('--sip-trials', type=int, default=20,
                        help='trials of the "Asterisk dead, host up" scenario')
    parser.add_argument('--only-trials', action='store_true',
                        help='the timed trials only (no loss, outages nor witness scenario)')
    args = parser.parse_args()
    # stopped by timeout or kill: still tear the nodes down (finally below)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    cleanup_leftovers()
    base = tempfile.mkdtemp(prefix='wazo-ha-bench-')
    os.chmod(base, 0o755)
    bed = Testbed(base, None)
    cron = None
    naive = None
    try:
        bed.start()
        master = bed.add_node('master', 1, with_postgres=False)
        slave = bed.add_node('slave', 2, with_postgres=False)
        slave.write_settings(check=DEFAULTS)
        r = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address', master.ip)
        assert r.returncode == 0, r.stderr
        slave.run('wazo-service', 'start')
        cron = Cron(slave, 60.0)
        cron.start()
        assert wait_standby(slave), 'the slave never went to standby'

        def trials(count, label, die, revive):
            fo, fb = [], []
            for trial in range(count):
                time.sleep(random.uniform(0, 60))  # the master dies at a random second
                died = time.time()
                die()
                started = wait_call(slave, 'wazo-service start', died, 300)
                time.sleep(random.uniform(0, 10))
                back = time.time()
                revive()
                stopped = wait_call(slave, 'wazo-service stop wazo', back, 400)
                fo.append(started - died if started else float('inf'))
                fb.append(stopped - back if stopped else float('inf'))
                print(f'{label} trial {trial + 1}: failover {fo[-1]:.1f} s, failback {fb[-1]:.1f} s',
                      flush=True)
                wait_standby(slave)
            return fo, fb

        rows = []
        if not args.only_loss and args.trials:
            failovers, failbacks = trials(args.trials, 'link down', lambda: master.link(False),
                                          lambda: master.link(True))
            rows += [('failover (link down -> wazo-service start)', failovers,
                      'median <= 20, worst <= 30'),
                     ('failback (link up -> wazo-service stop wazo)', failbacks,
                      'worst <= up_after + 30 = 90')]
        if not args.only_loss and args.sip_trials:
            master.start_sip_server()
            slave.write_settings(check={**DEFAULTS, 'sip_options': 'udp:5060'})
            time.sleep(70)  # one run with the new settings
            assert wait_standby(slave), 'the slave never went to standby with the SIP probe'
            failovers, failbacks = trials(args.sip_trials, 'Asterisk dead', master.stop_sip_server,
                                          master.start_sip_server)
            master.stop_sip_server()
            slave.write_settings(check=DEFAULTS)
            rows += [('failover, Asterisk dead, host up (SIP server killed -> wazo-service start)',
                      failovers, 'worst <= 30'),
                     ('failback, Asterisk back (SIP server started -> wazo-service stop wazo)',
                      failbacks, 'worst <= up_after + 30 = 90')]
        if args.only_trials:
            print_trials(rows)
            return

        naive_out = os.path.join(slave.root, 'naive.log')
        open(naive_out, 'w').close()
        naive = [slave.popen('bash', '-c', NAIVE_CHECKER, env={'MASTER': master.ip, 'OUT': naive_out})
                 for _ in range(args.naive_checkers)]

        def false_failovers(since):
            ours = len(calls_after(slave, 'wazo-service start', since))
            with open(naive_out) as f:
                theirs = sum(1 for line in f if float(line.split()[0]) > since)
            return ours, theirs

        t = time.time()
        loss(slave, 30, master.ip)
        time.sleep(args.loss_minutes * 60)
        loss(slave, 0, master.ip)
        loss_result = false_failovers(t)
        print(f'{args.loss_minutes:g} min of 30% loss: ours {loss_result[0]}, naive '
              f'{loss_result[1]} ({args.naive_checkers} naive checkers)', flush=True)
        if args.only_loss:
            return

        t = time.time()
        for _ in range(args.outages):
            time.sleep(random.uniform(20, 50))
            master.link(False)
            time.sleep(10)
            master.link(True)
        time.sleep(30)
        outage_result = false_failovers(t)
        print(f'{args.outages} outages of 10 s: ours {outage_result[0]}, naive {outage_result[1]}',
              flush=True)

        witness = bed.add_node('witness', 3, with_postgres=False)
        slave.write_settings(check={**DEFAULTS, 'witness': witness.ip})
        time.sleep(70)  # one run with the new settings
        t = time.time()
        slave.link(False)
        time.sleep(120)
        slave.link(True)
        witness_result = false_failovers(t)[0]
        print(f'slave cut off for 120 s with a witness: {witness_result} failovers', flush=True)

        print_trials(rows)
        print()
        print('| scenario | wazo-ha failovers | naive (3 pings 10 s apart, every minute) failovers |')
        print('|---|---|---|')
        print(f'| {args.loss_minutes:g} min of 30% random loss | {loss_result[0]} | {loss_result[1]} '
              f'({args.naive_checkers} checkers) |')
        print(f'| {args.outages} outages of 10 s | {outage_result[0]} | {outage_result[1]} |')
        print(f'| slave cut off 120 s, witness set | {witness_result} | - |')
    finally:
        for proc in naive or []:
            proc.kill()
        if cron:
            cron.close()
        bed.close()
        import shutil
        shutil.rmtree(base, ignore_errors=True)


if __name__ == '__main__':
    main()
