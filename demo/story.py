"""The whole cluster as an administrator lives with it, one step at a time.

Used by `make demo` (demo/demo.py prints it) and by the end-to-end test (which asserts
every step). Two nodes in network namespaces: a master (198.18.0.1) and a slave
(198.18.0.2), each with PostgreSQL 15 holding the real Wazo schema; the slave runs sshd.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, '..', 'tests'), os.path.join(HERE, '..')]

from datagen import installation_sql  # noqa: E402
from phone import Timers  # noqa: E402
from phones_helpers import Phones  # noqa: E402
from sip_capture import Capture, attempts, failed_time, percentile, sip_messages  # noqa: E402
from stream_helpers import create_user, users_named  # noqa: E402
from testbed import Cron, Testbed, cleanup_leftovers, template_cluster, wait_call  # noqa: E402
from wazo_ha_common.files import failback  # noqa: E402

ROOT_PASSWORD = 'demo-slave-password'
DEFAULT_CHECK = {'probe_interval': '5', 'down_after': '15', 'up_after': '60', 'run_for': '55'}
FAST_CHECK = {'probe_interval': '1', 'down_after': '3', 'up_after': '6', 'run_for': '8',
              'probe_timeout': '1'}
FILES = {
    '/etc/asterisk/extensions_extra.d/demo.conf': '[demo]\nexten = 999,1,Playback(hello-world)\n',
    '/var/lib/asterisk/agi-bin/demo.agi': '#!/bin/sh\necho demo\n',
    '/var/lib/wazo/sounds/tenants/acme/playback/greeting.wav': 'RIFF' + 'demo' * 4096,
}
VOICEMAIL = '/var/spool/asterisk/voicemail/default/10001/INBOX/msg0000.txt'


class Story:
    def __init__(self, fast: bool = False, users: int = 2000, say=print, phones: int = 0):
        self.fast = fast
        # phones: that many SIP phones (tests/phone.py) on a third node, registering on real
        # registrars (kamailio) that the nodes' telephony starts and stops; --fast divides
        # their timers and the SIP expiry by 10 as it shortens the check's
        self.phone_count = phones
        self.phone_scale = 0.1 if fast else 1.0
        self.expiry = tuple(max(1, round(v * self.phone_scale)) for v in (180, 240, 300))
        self.phones = self.capture = None
        self.phones_figures: dict = {}
        self.users = users
        self.say = say
        self.check = dict(FAST_CHECK if fast else DEFAULT_CHECK)
        if phones:  # the failback's wait is bounded by the phones' (scaled) fallback timeout
            self.check['failback_phones_timeout'] = f'{120 * self.phone_scale:g}'
            self.check['failback_phones_margin'] = f'{30 * self.phone_scale:g}'
        self.cron_period = 10.0 if fast else 60.0
        self.timeline: list[tuple[float, str]] = []
        self.t0 = time.time()
        self.bed = None
        self.cron = None
        cleanup_leftovers()
        self.base = tempfile.mkdtemp(prefix='wazo-ha-demo-')
        os.chmod(self.base, 0o755)

    def mark(self, event: str) -> None:
        self.timeline.append((time.time() - self.t0, event))
        self.say(f'[{time.time() - self.t0:6.1f} s] {event}')

    # building

    def build(self) -> None:
        self.bed = Testbed(self.base, template_cluster(self.base))
        self.bed.start()
        self.master = self.bed.add_node('master', 1)
        self.slave = self.bed.add_node('slave', 2)
        for node in (self.master, self.slave):
            node.write_settings(check=self.check, **self.sip_settings())
            if self.phone_count:  # the node's telephony includes a SIP registrar and proxy
                low, default, high = self.expiry
                node.use_sip_registrar(low, high, default, delay=10 * self.phone_scale)
        if self.phone_count:
            self.phones_node = self.bed.add_node('phones', 10, with_postgres=False)
        self.slave.set_root_password(ROOT_PASSWORD)
        self.slave.start_sshd()
        self.askpass = self.master.password_answers(ROOT_PASSWORD)
        self.mark('two nodes up: master 198.18.0.1 and slave 198.18.0.2, each with '
                  'PostgreSQL 15 and the Wazo schema; sshd on the slave')

    def generate(self) -> None:
        self.master.psql(installation_sql(self.users, self.users * 20))
        self.slave.psql(installation_sql(0, 500, groups=0))  # the slave's own call history
        self.mark(f'master holds {self.users} users with lines, extensions, voicemails, '
                  f'function keys, groups; {self.users * 20} CEL rows')

    def run(self, node, command, *args, **kw):
        started = time.monotonic()
        result = node.wazo(command, *args, **kw)
        return result, time.monotonic() - started

    def configure(self):
        slave, t1 = self.run(self.slave, 'wazo-ha-config', 'set', '--node-type', 'slave',
                             '--remote-address', self.master.ip)
        master, t2 = self.run(self.master, 'wazo-ha-config', 'set', '--node-type', 'master',
                              '--remote-address', self.slave.ip)
        self.slave.run('wazo-service', 'restart')
        self.mark(f'wazo-ha-config: slave ({t1:.1f} s, exit {slave.returncode}), '
                  f'master ({t2:.1f} s, exit {master.returncode})')
        return slave, master

    def sync_init(self):
        result, took = self.run(self.master, 'wazo-sync', '-i', env=self.askpass)
        self.mark(f'wazo-sync -i: key made and authorised on the slave ({took:.1f} s, '
                  f'exit {result.returncode})')
        return result

    def replicate(self, label: str):
        result, took = self.run(self.master, 'xivo-master-slave-db-replication', self.slave.ip)
        self.mark(f'{label}: {result.stdout.strip() or result.stderr.strip()} '
                  f'(command took {took:.2f} s)')
        return result

    def change_one_user(self) -> None:
        self.master.psql("UPDATE userfeatures SET firstname = 'Renamed' "
                         "WHERE id = (SELECT min(id) FROM userfeatures)")

    def write_files(self) -> None:
        for path, content in FILES.items():
            real = self.master.host_path(path)
            os.makedirs(os.path.dirname(real), exist_ok=True)
            with open(real, 'w') as f:
                f.write(content)

    def sync(self):
        result, took = self.run(self.master, 'wazo-sync')
        self.mark(f'wazo-sync: {result.stdout.strip()} (exit {result.returncode})')
        return result

    def status(self, node) -> tuple[int, dict]:
        result = node.wazo('wazo-ha-status', '--json')
        return result.returncode, json.loads(result.stdout)

    def start_cron(self) -> None:
        self.cron = Cron(self.slave, self.cron_period)
        self.cron.start()
        deadline = time.time() + 3 * self.cron_period
        while time.time() < deadline and self.slave.services_state() != 'base':
            time.sleep(0.5)
        self.mark(f'cron on the slave starts xivo-check-master-status every '
                  f'{self.cron_period:.0f} s; slave services: {self.slave.services_state()}')

    def sip_settings(self) -> dict:
        if not self.phone_count:
            return {}
        low, default, high = self.expiry
        return {'sip': {'min_expiry': low, 'default_expiry': default, 'max_expiry': high}}

    # phones

    def start_phones(self) -> None:
        """The phones register on the master (its telephony runs), their phases random; a
        capture of the bridge records what they see."""
        self.capture = Capture(self.bed, os.path.join(self.base, 'phones.pcap'))
        timers = Timers().scaled(self.phone_scale)
        every = 4 * self.phone_scale
        refresh = self.expiry[2] - min(timers.refresh_margin, self.expiry[2] / 2)
        self.phones = Phones(self.phones_node, [self.master, self.slave], self.phone_count,
                             dataclasses.replace(timers, call_every=every), spread=refresh,
                             call_in_every=every).__enter__()
        registered = self.wait_phones(self.master, 0, refresh + 30)
        self.mark(f'{registered} phones registered on the master (Yealink timers, SIP expiry '
                  f'{"/".join(map(str, self.expiry))} s), called every {every:g} s through both '
                  'nodes and calling out as often')

    def wait_phones(self, node, since: float, timeout: float) -> int:
        """How many phones registered on `node` after `since`, once all did (or at timeout)."""
        deadline = time.time() + timeout
        while True:
            done = {e['phone'] for e in self.phones.events('registered')
                    if e['server'] == node.ip and e['t'] > since}
            if len(done) >= self.phone_count or time.time() > deadline:
                return len(done)
            time.sleep(0.5)

    def phones_failed(self, start: float, end: float) -> tuple[list[float], list[float]]:
        """Per phone, seconds its calls in and its own calls failed in [start, end), from
        the capture of the bridge (not the phones' word)."""
        # the capture is still being written: attempts of the last seconds may not have their
        # answer in it yet, so the window ends before them
        end = min(end, time.time() - 1 - 8 * self.phone_scale)
        messages = sip_messages(self.capture.path)
        calls_in, calls_out = attempts(messages, 'in'), attempts(messages, 'out')
        return ([failed_time(calls_in.get(p, []), start, end)[0] for p in calls_in],
                [failed_time(calls_out.get(p, []), start, end)[0] for p in calls_out])

    def phones_after_failover(self, died: float) -> None:
        high = self.expiry[2]
        moved = self.wait_phones(self.slave, died, high + 150 * self.phone_scale + 60)
        time.sleep(1 + 16 * self.phone_scale)  # more rounds of calls, all answered
        calls_in, calls_out = self.phones_failed(died, time.time())
        self.phones_figures = {'failover_in_p95': percentile(calls_in, 95)}
        self.mark(f'{len(calls_in)} phones: calls reach them again {percentile(calls_in, 95):.0f} s '
                  f'after the master died (p95; worst {max(calls_in):.0f} s), their own calls '
                  f'{percentile(calls_out, 95):.0f} s (p95); {moved} registered on the slave')

    def phones_after_failback(self, back: float, stopped: float) -> None:
        returned = self.wait_phones(self.master, back, self.expiry[2] + 300 * self.phone_scale)
        time.sleep(1 + 16 * self.phone_scale)
        calls_in, calls_out = self.phones_failed(back, time.time())
        cut = [t for t in calls_in if t > 0]
        # a caller who reaches the master only (a trunk on it), once the slave has stopped
        end = time.time() - 1 - 8 * self.phone_scale
        via_master = attempts(sip_messages(self.capture.path), 'in', via=self.master.ip)
        gaps = [failed_time(series, stopped, end)[0] for series in via_master.values()]
        alone = [t for t in gaps if t > 0]
        self.phones_figures['failback_unreachable'] = len(cut)
        self.phones_figures['master_alone_unreachable'] = len(alone)
        self.mark(f'{len(calls_in)} phones: ' + (
            'none unreachable at failback (called through either node)' if not cut else
            f'{len(cut)} unreachable at failback, for up to {max(cut):.0f} s')
            + ('; through the master alone, none unreachable after the slave stopped'
               if not alone else f'; through the master alone, {len(alone)} unreachable after '
               f'the slave stopped, for up to {max(alone):.0f} s')
            + f'; {returned} registered on the master again')

    def master_dies(self) -> float | None:
        died = time.time()
        self.master.link(False)
        self.mark("master's link cut: the master is dead for the slave and the phones")
        started = wait_call(self.slave, 'wazo-service start', died, 240)
        if started:
            self.mark(f'FAILOVER: the slave started telephony {started - died:.1f} s after '
                      'the master died')
            if self.phones:
                self.phones_after_failover(died)
        return started - died if started else None

    def voicemail_left_on_slave(self) -> None:
        path = self.slave.host_path(VOICEMAIL)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'w') as f:
            f.write('[message]\ncallerid=Alice <10002>\n')
        self.mark('a caller leaves a voicemail on the slave while the master is down')

    def master_returns(self) -> float | None:
        back = time.time()
        self.master.link(True)
        self.mark('master back on the network')
        stopped = wait_call(self.slave, 'wazo-service stop wazo', back,
                            400 + (self.expiry[2] + 60 if self.phones else 0))
        if stopped:
            self.mark(f'FAILBACK: the slave stopped telephony {stopped - back:.1f} s after the '
                      f'master came back (it must answer for {self.check["up_after"]} s first'
                      + (', then its phones had to leave it)' if self.phones else ')'))
            if self.phones:
                self.phones_after_failback(back, stopped)
            record = self.served_record(wait=30)
            if record and record.ended_at is not None:
                self.mark(f'the slave recorded the telephony it served: episode {record.episode}, '
                          f'{record.describe()}')
        return stopped - back if stopped else None

    def served_record(self, wait: float = 0):
        """The slave's record of the telephony it served, once closed (within `wait` s)."""
        path = os.path.join(self.slave.root, 'failback-record', failback.RECORD_FILE)
        deadline = time.time() + wait
        while True:
            record = failback.parse_record(path)
            if (record and record.ended_at is not None) or time.time() >= deadline:
                return record
            time.sleep(0.2)

    def sync_after_failback(self):
        """The master's next plain wazo-sync (cron, hourly): voicemail and recordings come
        back first, nothing to run by hand."""
        result, took = self.run(self.master, 'wazo-sync')
        self.mark(f'wazo-sync (the next hourly run): {result.stdout.strip() or result.stderr.strip()} '
                  f'(exit {result.returncode})')
        return result

    # continuous replication

    def go_continuous(self):
        """[database] mode = continuous on both nodes: the master set again (wal_level logical,
        publication, stream role), paired again, and the slave's first hand-off."""
        for node in (self.master, self.slave):
            node.write_settings(check=self.check, database={'mode': 'continuous'},
                                **self.sip_settings())
        master, t1 = self.run(self.master, 'wazo-ha-config', 'set', '--node-type', 'master',
                              '--remote-address', self.slave.ip)
        self.mark(f'wazo-ha-config set on the master in continuous mode: wal_level = logical, '
                  f'publication and stream role ({t1:.1f} s, exit {master.returncode})')
        pairing, t2 = self.run(self.master, 'wazo-sync', '-i', env=self.askpass)
        self.mark(f'wazo-sync -i: the stream role\'s password given to the slave ({t2:.1f} s, '
                  f'exit {pairing.returncode})')
        stream, t3 = self.run(self.slave, 'wazo-ha-stream')
        self.mark(f'wazo-ha-stream on the slave: {stream.stdout.strip() or stream.stderr.strip()} '
                  f'(command took {t3:.2f} s)')
        return master, pairing, stream

    def recovery_point(self, name: str) -> float | None:
        """A user created on the master: seconds until the slave shows it (no run in between)."""
        create_user(self.master, name)
        committed = time.time()
        deadline = committed + 30
        while time.time() < deadline:
            if users_named(self.slave, name):
                took = time.time() - committed
                self.mark(f'user {name} created on the master: on the slave {took:.2f} s later')
                return took
            time.sleep(0.02)
        self.mark(f'user {name} created on the master: not on the slave after 30 s')
        return None

    def last_seconds_survive(self, name: str) -> bool:
        """A user created 2 s before the master's link is cut is already on the slave."""
        create_user(self.master, name)
        time.sleep(2)
        self.master.link(False)
        there = bool(users_named(self.slave, name))
        self.master.link(True)
        self.mark(f'user {name} created 2 s before the master\'s link was cut: on the slave: '
                  f'{there}')
        return there

    def close(self) -> None:
        if self.phones:
            self.phones.__exit__(None, None, None)
        if self.capture:
            self.capture.close()
        if self.cron:
            self.cron.close()
        if self.bed:
            self.bed.close()
        import shutil
        shutil.rmtree(self.base, ignore_errors=True)
