"""The local `postgres` user against root: it owns the directories where wazo-ha-stream writes
the subscription's password file (/var/lib/postgresql) and where wazo-ha-config set writes
pg_hba.conf and conf.d/wazo-ha.conf (/etc/postgresql/15/main). It plants links to root's
files there, before and while those commands run; no file outside changes owner, mode or
content, and none is read into a file postgres may read."""

import os
import pwd
import shutil
import signal
import subprocess

import pytest

from stream_helpers import continuous_settings

RACER = r'''
import os, sys, time
dirs, targets, victims = (a.split(',') if a else [] for a in sys.argv[1:4])
stop, count = sys.argv[4:6]
paths = [os.path.join(d, n) for d in dirs for n in targets]
planted = turn = 0
deadline = time.time() + 120
while time.time() < deadline and not os.path.exists(stop):
    turn += 1
    candidates = paths
    if turn % 10 == 0 or not paths:  # now and then, the temporary files too
        candidates = paths + [os.path.join(d, n) for d in dirs for n in os.listdir(d)
                              if n.startswith('.') and not n.startswith('.racer')]
    for path in candidates:
        if os.path.islink(path) or (path not in paths and not os.path.exists(path)):
            continue
        link = os.path.join(os.path.dirname(path), f'.racer-{planted}')
        try:
            os.symlink(victims[planted % len(victims)], link)
            os.rename(link, path)
            planted += 1
        except OSError:
            pass
with open(count, 'w') as f:
    f.write(str(planted))
'''


def victims(slave):
    """root's files the links point to: mode 0600, known content."""
    paths = []
    for i in range(3):
        path = os.path.join(slave.root, f'root-only-{i}')
        with open(path, 'w') as f:
            f.write(f'root only {i}\n')
        os.chmod(path, 0o600)
        paths.append(path)
    return paths


def state(paths):
    out = {}
    for p in paths:
        st = os.lstat(p)
        with open(p) as f:
            out[p] = (st.st_uid, st.st_gid, oct(st.st_mode), f.read())
    return out


@pytest.fixture
def slave_under_attack(bed):
    master = bed.add_node('master', 1, with_postgres=False)
    slave = bed.add_node('slave', 2)
    pgpass_dir = os.path.join(slave.root, 'var-lib-postgresql')
    os.mkdir(pgpass_dir)
    shutil.chown(pgpass_dir, 'postgres', 'postgres')
    continuous_settings(slave, database={
        'subscription_passfile': os.path.join(pgpass_dir, 'wazo-ha-stream.pgpass')})
    with open(slave.passfile, 'w') as f:
        f.write(f'{master.ip}:5432:asterisk:wazo_ha_stream:stream-secret\n')
    os.chmod(slave.passfile, 0o600)
    r = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address', master.ip)
    assert r.returncode == 0, r.stderr
    return master, slave, pgpass_dir


class Racer:
    """`postgres` replacing, as fast as it can, the named files (and, now and then, every
    temporary file) of `dirs` by links to root's files."""

    def __init__(self, slave, dirs, names, targets):
        self.dirs = dirs
        work = os.path.join(slave.root, 'racer')
        os.makedirs(work, exist_ok=True)
        shutil.chown(work, 'postgres', 'postgres')
        self.stop, self.count = os.path.join(work, 'stop'), os.path.join(work, 'count')
        self.proc = subprocess.Popen(['runuser', '-u', 'postgres', '--', '/usr/bin/python3',
                                      '-c', RACER, ','.join(dirs), ','.join(names),
                                      ','.join(targets), self.stop, self.count])

    def close(self) -> int:
        """Stop it; how many links it planted."""
        open(self.stop, 'w').close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        with open(self.count) as f:
            return int(f.read())


def assert_untouched(targets, before, dirs):
    assert state(targets) == before
    # nor was their content read into a file postgres may read
    for d in dirs:
        for name in os.listdir(d):
            path = os.path.join(d, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, errors='replace') as f:
                    assert 'root only' not in f.read(), path


@pytest.mark.fresh_testbed('a slave with a postgres-owned directory for the password file')
def test_links_raced_into_the_password_files_directory_lead_root_nowhere(slave_under_attack):
    master, slave, pgpass_dir = slave_under_attack
    targets = victims(slave)
    before = state(targets)
    racer = Racer(slave, [pgpass_dir], ['wazo-ha-stream.pgpass'], targets)
    try:
        for _ in range(8):
            r = slave.wazo('wazo-ha-stream')
            # past the password file: the master (no PostgreSQL there) refuses the connection
            assert r.returncode == 1 and 'the master database' in r.stderr, r.stderr
    finally:
        planted = racer.close()
    assert planted > 0, 'the racer planted no link'
    assert_untouched(targets, before, [pgpass_dir])
    # the attack over, the next run writes the real file, postgres' own, 0600
    for name in os.listdir(pgpass_dir):
        if os.path.islink(os.path.join(pgpass_dir, name)):
            os.unlink(os.path.join(pgpass_dir, name))
    slave.wazo('wazo-ha-stream')
    passfile = os.path.join(pgpass_dir, 'wazo-ha-stream.pgpass')
    st = os.lstat(passfile)
    assert (st.st_uid, oct(st.st_mode)) == (pwd.getpwnam('postgres').pw_uid, '0o100600')
    with open(passfile) as f:
        assert f.read() == f'{master.ip}:5432:asterisk:wazo_ha_stream:stream-secret\n'


@pytest.mark.fresh_testbed('a slave with a postgres-owned directory for the password file')
def test_links_in_postgresqls_configuration_directory_lead_root_nowhere(slave_under_attack):
    master, slave, _ = slave_under_attack
    targets = victims(slave)
    before = state(targets)
    conf_d = os.path.join(slave.pgdata, 'conf.d')
    dirs = [slave.pgdata, conf_d]
    hba = os.path.join(slave.pgdata, 'pg_hba.conf')
    with open(hba) as f:
        real_hba = f.read()
    # planted before the run: refused, said, nothing read through it
    link = os.path.join(slave.pgdata, '.planted')
    subprocess.run(['runuser', '-u', 'postgres', '--', 'ln', '-s', targets[0], link], check=True)
    os.rename(link, hba)
    r = slave.wazo('wazo-ha-config', 'set', '--node-type', 'disabled')
    assert r.returncode == 1 and f'{hba} is a symbolic link' in r.stderr, r.stderr
    assert_untouched(targets, before, dirs)
    os.unlink(hba)
    with open(hba, 'w') as f:
        f.write(real_hba)
    shutil.chown(hba, 'postgres', 'postgres')
    # raced while the files are written: every temporary file replaced by a link
    racer = Racer(slave, dirs, [], targets)
    try:
        for node_type in ('disabled', 'slave') * 3:
            args = ['--remote-address', master.ip] if node_type == 'slave' else []
            slave.wazo('wazo-ha-config', 'set', '--node-type', node_type, *args)
    finally:
        planted = racer.close()
    assert planted > 0, 'the racer planted no link'
    # (a link renamed into place by the racer stays postgres' own business: root read and
    # wrote nothing through it)
    assert_untouched(targets, before, dirs)
