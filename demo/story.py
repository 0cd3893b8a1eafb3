"""The whole cluster as an administrator lives with it, one step at a time.

Used by `make demo` (demo/demo.py prints it) and by the end-to-end test (which asserts
every step). Two nodes in network namespaces: a master (198.18.0.1) and a slave
(198.18.0.2), each with PostgreSQL 15 holding the real Wazo schema; the slave runs sshd.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, '..', 'tests'), os.path.join(HERE, '..')]

from datagen import installation_sql  # noqa: E402
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
    def __init__(self, fast: bool = False, users: int = 2000, say=print):
        self.fast = fast
        self.users = users
        self.say = say
        self.check = FAST_CHECK if fast else DEFAULT_CHECK
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
            node.write_settings(check=self.check)
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

    def master_dies(self) -> float | None:
        died = time.time()
        self.master.link(False)
        self.mark("master's link cut: the master is dead for the slave and the phones")
        started = wait_call(self.slave, 'wazo-service start', died, 240)
        if started:
            self.mark(f'FAILOVER: the slave started telephony {started - died:.1f} s after '
                      'the master died')
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
        stopped = wait_call(self.slave, 'wazo-service stop wazo', back, 400)
        if stopped:
            self.mark(f'FAILBACK: the slave stopped telephony {stopped - back:.1f} s after the '
                      f'master came back (it must answer for {self.check["up_after"]} s first)')
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
            node.write_settings(check=self.check, database={'mode': 'continuous'})
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
        if self.cron:
            self.cron.close()
        if self.bed:
            self.bed.close()
        import shutil
        shutil.rmtree(self.base, ignore_errors=True)
