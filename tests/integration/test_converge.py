"""HA configured the Wazo way: `PUT /ha` on wazo-confd, which ends in wazo-sysconfd's HA handler,
never in wazo-ha-config; each node then converges its access to ha.conf by itself
(`wazo-ha-config converge`, every minute from cron; first thing in the slave's pairing session).

wazo-sysconfd's handler is replayed step for step by tests/sysconfd_stand_in.py (read from
wazo-platform/wazo-sysconfd, wazo_sysconfd/plugins/ha_config/ha.py: ha.conf, its pg_hba.conf
trust line, listen_addresses = '*', a PostgreSQL restart, its cron files,
xivo-manage-slave-services start on master and disabled, the sentinels); `wazo-service` is the
recording stand-in of the testbed (wazo-platform/xivo-config, bin/wazo-service). PostgreSQL 15,
sshd and rsync are real, each node in its own namespaces."""

import json
import os
import subprocess

import pytest

from check_helpers import FAST
from datagen import installation_sql
from replication_helpers import assert_slave_consistent, replicate, run_pairing
from stream_helpers import (continuous_settings, create_user, our_slots, setup_streaming,
                            stream, subscription, users_named, wait_until)
from testbed import BIN_DIR, REPO

SYSCONFD = os.path.join(REPO, 'tests', 'sysconfd_stand_in.py')
MANAGE = os.path.join(BIN_DIR, 'xivo-manage-slave-services')
ROLE = 'wazo_ha_replication'
SYNCED = '/etc/asterisk/extensions_extra.d/quick-summary.conf'


def put_ha(node, node_type, remote=''):
    """PUT /ha on wazo-confd, as its wazo-sysconfd handler does it on this node."""
    cron_dir = os.path.join(node.root, 'sysconfd-cron.d')
    os.makedirs(cron_dir, exist_ok=True)
    body = json.dumps({'node_type': node_type, 'remote_address': remote})
    return node.run('/usr/bin/python3', SYSCONFD, body, '--pg-dir', node.pgdata,
                    '--restart', ' '.join(node._pg_ctl('-w', '-m', 'fast', 'restart')),
                    '--cron-dir', cron_dir, '--record', os.path.join(node.root, 'sysconfd-steps'),
                    '--manage', MANAGE)


def sysconfd_steps(node):
    with open(os.path.join(node.root, 'sysconfd-steps')) as f:
        return f.read().splitlines()


# wazo_sysconfd/plugins/ha_config/ha.py, in its order
SYSCONFD_STEPS = {
    'slave': ['write ha.conf', 'pg_hba: delete host asterisk postgres lines',
              'pg_hba: append the trust line', 'postgresql.conf: delete listen_addresses',
              "postgresql.conf: append listen_addresses = '*'", 'restart PostgreSQL',
              'cron files', 'sentinels'],
    'master': ['write ha.conf', 'pg_hba: delete host asterisk postgres lines',
               'postgresql.conf: delete listen_addresses', 'restart PostgreSQL', 'cron files',
               '/usr/sbin/xivo-manage-slave-services start', 'sentinels'],
}


def converge(node):
    return node.wazo('wazo-ha-config', 'converge')


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def psql_from(node, user, host='198.18.0.2', passfile='/nonexistent'):
    """psql from inside `node` to the database of `host`; never root's ~/.pgpass."""
    return node.run('psql', '-X', '-q', '-A', '-t', '-w', '-c', 'SELECT 42',
                    f'host={host} dbname=asterisk user={user} sslmode=require',
                    env={'PGCONNECT_TIMEOUT': '3', 'PGPASSFILE': passfile})


def hba(node):
    with open(os.path.join(node.pgdata, 'pg_hba.conf')) as f:
        return f.read()


def ours_left(node):
    """Every trace of ours on a node: roles, blocks, conf.d file, rsync daemon, subscription,
    publication, slots."""
    left = []
    roles = node.psql("SELECT string_agg(rolname, ' ') FROM pg_roles "
                      "WHERE rolname IN ('wazo_ha_replication', 'wazo_ha_stream', "
                      "'wazo_ha_subscriber')")
    left += roles.split()
    left += [line for line in hba(node).splitlines() if 'wazo-ha' in line or 'wazo_ha' in line]
    if os.path.exists(os.path.join(node.pgdata, 'conf.d', 'wazo-ha.conf')):
        left.append(INSTALLED if wazo_ha_conf(node) == INSTALLED_LINES
                    else 'conf.d/wazo-ha.conf')
    if os.path.exists(node.host_path('/etc/wazo-ha/rsyncd.conf')):
        left.append('rsyncd.conf')
    if subscription(node) is not None:
        left.append('subscription')
    if node.psql("SELECT count(*) FROM pg_publication WHERE pubname = 'wazo_ha'") != '0':
        left.append('publication')
    left += our_slots(node)
    return left


# continuous mode (the default) keeps these on every role from the installation on, so that
# the PostgreSQL restart of the next PUT /ha activates them (pg_files.render_conf)
INSTALLED_LINES = ['wal_level = logical', "listen_addresses = '*'"]
INSTALLED = "conf.d/wazo-ha.conf: the installation's wal_level = logical, listen_addresses = '*'"


def wazo_ha_conf(node):
    """The lines of conf.d/wazo-ha.conf but its comments ([] when there is none)."""
    path = os.path.join(node.pgdata, 'conf.d', 'wazo-ha.conf')
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [line for line in f.read().splitlines() if not line.startswith('#')]


def write(node, path, text):
    host = node.host_path(path)
    os.makedirs(os.path.dirname(host), exist_ok=True)
    with open(host, 'w') as f:
        f.write(text)


def conf_load_time(node):
    """When PostgreSQL last read its configuration files, and its postmaster's pid."""
    with open(os.path.join(node.pgdata, 'postmaster.pid')) as f:
        pid = f.readline().strip()
    return node.psql('SELECT pg_conf_load_time()'), pid


def log_lines(node):
    with open(node.log_file) as f:
        return f.read().splitlines()


def installed(node, mode):
    """The package installed on the node: its settings (`mode` None: no mode written, the
    package's default) and what debian/postinst runs, the node's converge."""
    # the check probes for 6 s a run (the package's run covers the minute): enough to decide
    node.write_settings(database={'mode': mode}, check={**FAST['check'], 'run_for': '6'})
    return ok(converge(node))


@pytest.mark.parametrize('mode', [None, 'hourly'], ids=['default-settings', 'hourly'])
@pytest.mark.parametrize('first', ['slave', 'master'])
def test_the_quick_summary_exactly_as_documented(pair, first, mode):
    """Wazo's Quick Summary: the package installed, PUT /ha on both nodes (in either order),
    `wazo-service restart`, `wazo-sync -i`, `xivo-master-slave-db-replication SLAVE_IP`,
    `wazo-sync`: nothing else. With the default settings (no mode written: continuous) the
    pair then streams: the installation put wal_level = logical in place, PUT /ha's restart
    activated it, and the slave's cron minute (converge, wazo-ha-stream) hands off after the
    pairing; a change on the master reaches the slave with no replication run. With
    `mode = hourly` (the opt-out) nothing of the stream exists."""
    master, slave = pair
    continuous = mode is None
    for node in (master, slave):
        installed(node, mode)
        assert wazo_ha_conf(node) == (INSTALLED_LINES if continuous else [])
    write(master, SYNCED, '[quick-summary]\n')
    puts = {'slave': (slave, 'slave', master.ip), 'master': (master, 'master', slave.ip)}
    for name in (first, 'master' if first == 'slave' else 'slave'):
        node, node_type, remote = puts[name]
        ok(put_ha(node, node_type, remote))
    for node in (master, slave):
        ok(node.run('wazo-service', 'restart'))
    paired = run_pairing(master, slave)
    out = ok(paired)
    # the slave's converge ran in the pairing session: the role and our block came from it
    assert f'on the slave: PostgreSQL: created the replication role {ROLE}' in out
    if continuous:
        # a minute of the slave's cron (/etc/cron.d/wazo-ha): the check (the master is up:
        # `wazo-service restart` started the slave's telephony, the check stops it), the
        # converge, then wazo-ha-stream
        ok(slave.wazo('xivo-check-master-status'))
        ok(converge(slave))
        handed = stream(slave)
        assert handed.returncode == 0 and 'hand-off done (first hand-off)' in handed.stdout, \
            handed.stdout + handed.stderr
    ok(replicate(master, slave.ip))
    assert_slave_consistent(master, slave)
    ok(master.wazo('wazo-sync'))
    with open(slave.host_path(SYNCED)) as f:
        assert f.read() == '[quick-summary]\n'
    if continuous:
        assert master.psql('SHOW wal_level') == 'logical', 'activated by PUT /ha\'s restart'
        master.psql(installation_sql(users=2))
        create_user(master, 'Streamed')
        assert wait_until(lambda: users_named(slave, 'Streamed'), 20), 'the pair streams'
        assert subscription(slave) == (True, True)
        assert len(our_slots(master)) == 1
    else:
        assert master.psql('SHOW wal_level') == 'replica'
        assert subscription(slave) is None and our_slots(master) == []
        assert wazo_ha_conf(master) == []

    lines = hba(slave).splitlines()
    assert lines[1:4] == [f'hostssl asterisk {ROLE} 198.18.0.1/32 scram-sha-256',
                          f'host all {ROLE} all reject', 'host all postgres 198.18.0.1/32 reject']
    assert lines[-1] == 'host asterisk postgres 198.18.0.1/32 trust', "sysconfd's line, after ours"
    refused = psql_from(master, 'postgres')
    assert refused.returncode != 0
    assert 'pg_hba.conf rejects connection for host "198.18.0.1", user "postgres"' in refused.stderr
    assert psql_from(master, ROLE, passfile=master.passfile).returncode == 0
    # sysconfd's listen_addresses = '*' comes after conf.d, and the installation's
    # wal_level was there before PUT /ha's restart: nothing waits for a restart, on either node
    for node in (slave, master):
        again = converge(node)
        assert (again.returncode, again.stdout, again.stderr) == (0, '', ''), node.name
        status = node.wazo('wazo-ha-status')
        # it ran to its end (no crash): its exit status is the level its first line says
        level = status.stdout.splitlines()[0] if status.stdout else ''
        assert level.startswith('wazo-ha status: '), status.stdout + status.stderr
        assert status.returncode == {'OK': 0, 'WARNING': 1, 'CRITICAL': 2}[level.split()[-1]]
        assert status.stderr == '' and f'role: {node.name}' in status.stdout, status.stdout
        assert 'must be restarted' not in status.stdout and 'node access' not in status.stdout
    # the stand-in replayed sysconfd's handler in its order, on each node
    for node, node_type in ((slave, 'slave'), (master, 'master')):
        assert sysconfd_steps(node) == SYSCONFD_STEPS[node_type]


def test_the_quick_summary_at_human_speed_mails_no_false_cause(pair):
    """The Quick Summary with the default settings, step 5 (the replication) right after step 4
    (`wazo-sync -i`), before the slave's first cron minute: the master finds the pair paired and
    no slot yet, copies as in hourly mode and says it waits for the slave's first hand-off; no
    "open TCP 5432" mail (no mail at all). The slave's cron minute then hands off, and the pair
    streams; the next replication run finds the stream in force."""
    master, slave = pair
    for node in (master, slave):
        installed(node, None)
    ok(put_ha(master, 'master', slave.ip))
    ok(put_ha(slave, 'slave', master.ip))
    for node in (master, slave):
        ok(node.run('wazo-service', 'restart'))
    ok(run_pairing(master, slave))
    out = ok(replicate(master, slave.ip))
    assert "waiting for the slave's first hand-off" in out, out
    status = master.wazo('wazo-ha-status').stdout
    assert "waiting for the slave's first hand-off" in status and 'open TCP 5432' not in status
    assert [m for m in master.mails() if 'continuous replication is not in force' in m] == []
    ok(slave.wazo('xivo-check-master-status'))   # the slave's cron minute
    ok(converge(slave))
    handed = stream(slave)
    assert handed.returncode == 0 and 'hand-off done (first hand-off)' in handed.stdout, \
        handed.stdout + handed.stderr
    master.psql(installation_sql(users=2))
    create_user(master, 'Streamed')
    assert wait_until(lambda: users_named(slave, 'Streamed'), 20), 'the pair streams'
    assert 'the slave streams on slot' in ok(replicate(master, slave.ip))
    assert 'replication in force: continuous' in master.wazo('wazo-ha-status').stdout
    assert master.mails() == []


def configured_continuous(pair):
    master, slave = pair
    master.psql(installation_sql(users=5))
    setup_streaming(master, slave)
    create_user(master, 'Streamed')
    assert wait_until(lambda: users_named(slave, 'Streamed'), 10), 'the pair streams'
    assert len(our_slots(master)) == 1
    return master, slave


@pytest.mark.parametrize('becomes', ['disabled', 'master'])
def test_a_former_slave_keeps_nothing_of_ours_and_the_master_reaches_it_no_more(pair, becomes):
    """PUT /ha on the slave (disabled, or made master of the old master), then one converge
    run there: the old master's replication, wazo-sync and stream all fail to reach it. A node
    made disabled in continuous mode keeps only the installation's conf.d lines."""
    master, slave = configured_continuous(pair)
    write(master, SYNCED, 'before\n')
    ok(master.wazo('wazo-sync'))
    ok(put_ha(slave, becomes, master.ip if becomes == 'master' else ''))
    out = ok(converge(slave))
    assert f'PostgreSQL: dropped the subscription wazo_ha and its slot' in out
    assert f'dropped the replication role {ROLE}' in out
    assert 'dropped the role wazo_ha_subscriber, owner of the former subscription' in out, out
    assert 'rsyncd.conf: removed' in out
    left = ours_left(slave)
    if becomes == 'master':  # a continuous master of its own: its stream side, nothing else
        assert sorted(left) == ['# BEGIN wazo-ha: the slave may stream this master\'s changes '
                                '(managed by wazo-ha-config)', '# END wazo-ha stream',
                                'conf.d/wazo-ha.conf', 'host all wazo_ha_stream all reject',
                                'host replication wazo_ha_stream all reject',
                                'hostssl asterisk wazo_ha_stream 198.18.0.1/32 scram-sha-256',
                                'publication', 'wazo_ha_stream']
    else:
        assert left == [INSTALLED]
    assert our_slots(master) == [], 'its slot on the old master went with the subscription'

    tables = slave.psql("SELECT md5(string_agg(firstname, ',' ORDER BY id)) FROM userfeatures")
    create_user(master, 'AfterTheEnd')
    write(master, SYNCED, 'after\n')
    replication = replicate(master, slave.ip, check=False)
    assert replication.returncode == 1
    assert 'the slave refuses the replication role' in replication.stderr or \
        'pg_hba.conf' in replication.stderr, replication.stderr
    sync = master.wazo('wazo-sync')
    assert sync.returncode == 1, sync.stdout + sync.stderr
    assert users_named(slave, 'AfterTheEnd') == []
    assert slave.psql("SELECT md5(string_agg(firstname, ',' ORDER BY id)) FROM userfeatures") == tables
    with open(slave.host_path(SYNCED)) as f:
        assert f.read() == 'before\n'
    again = converge(slave)
    assert (again.returncode, again.stdout, again.stderr) == (0, '', '')


def test_a_subscription_is_dropped_from_the_catalog_when_the_mode_is_back_to_hourly(pair):
    """Continuous mode, stream.json deleted (a purge and reinstall), the mode set back to
    hourly: the converge finds the subscription in PostgreSQL's catalog and drops it."""
    master, slave = configured_continuous(pair)
    os.unlink(os.path.join(slave.state_dir, 'stream.json'))
    continuous_settings(slave, database={'mode': 'hourly'})
    out = ok(converge(slave))
    assert 'PostgreSQL: dropped the subscription wazo_ha and its slot' in out
    assert subscription(slave) is None
    assert our_slots(master) == []
    assert 'mode is hourly' in ok(stream(slave))
    # the slave still is a slave: its replication role and block stay
    assert slave.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{ROLE}'") == '1'


def test_the_converge_run_twice_changes_nothing_the_second_time(pair):
    """No write, no reload, no restart, no log line when everything is as it should be; on
    both roles in continuous mode (the most there is to converge)."""
    master, slave = configured_continuous(pair)
    for node in (slave, master):
        ok(converge(node))
        before, lines = conf_load_time(node), len(log_lines(node))
        hba_mtime = os.stat(os.path.join(node.pgdata, 'pg_hba.conf')).st_mtime_ns
        second = converge(node)
        assert second.returncode == 0 and second.stdout == '' and second.stderr == ''
        assert conf_load_time(node) == before, 'neither reloaded nor restarted'
        assert os.stat(os.path.join(node.pgdata, 'pg_hba.conf')).st_mtime_ns == hba_mtime
        assert log_lines(node)[lines:] == []


def test_a_restart_is_done_once_on_an_idle_slave_and_left_pending_on_a_master(pair):
    """ha.conf written by hand (no PUT /ha, so no restart and no listen_addresses = '*'): the
    slave, serving no telephony, is restarted by its converge, once; the master in continuous
    mode, serving, gets wal_level written and pending, shown by wazo-ha-status."""
    master, slave = pair
    with open(slave.ha_conf, 'w') as f:
        json.dump({'node_type': 'slave', 'remote_address': master.ip}, f)
    _, pid = conf_load_time(slave)
    out = ok(converge(slave))
    assert ('PostgreSQL restarted (listen_addresses changed; this slave serves no telephony)'
            in out)
    assert conf_load_time(slave)[1] != pid
    assert slave.psql('SHOW listen_addresses') == '198.18.0.2, localhost'
    _, pid = conf_load_time(slave)
    again = converge(slave)
    assert (again.returncode, again.stdout, again.stderr) == (0, '', '')
    assert conf_load_time(slave)[1] == pid

    continuous_settings(master)
    ok(master.run('wazo-service', 'start'))  # the master serves telephony
    with open(master.ha_conf, 'w') as f:
        json.dump({'node_type': 'master', 'remote_address': slave.ip}, f)
    _, pid = conf_load_time(master)
    out = ok(converge(master))
    assert 'wal_level = logical' in out and 'PostgreSQL restarted' not in out
    assert 'pending: PostgreSQL must be restarted for listen_addresses, wal_level' in out
    assert conf_load_time(master)[1] == pid
    status = master.wazo('wazo-ha-status')
    assert ('WARNING: PostgreSQL must be restarted for listen_addresses, wal_level to take '
            'effect') in status.stdout
    master.stop_postgres()
    master.start_postgres()
    assert 'pending' not in ok(converge(master))
    assert 'must be restarted' not in master.wazo('wazo-ha-status').stdout


def test_a_former_slave_closes_everything_even_when_its_old_master_granted_its_role_privileges(
        pair):
    """The hostile review's attack: the old master, logged in as the replication role (a member
    of the tables' owner), grants that role a privilege on the slave, so that DROP ROLE fails
    ("privileges for table userfeatures"). After PUT /ha disabled, one converge run still
    closes every way in: the rsync daemon, our block, the role (its grant revoked, then
    dropped)."""
    master, slave = pair
    write(master, SYNCED, 'before\n')
    ok(put_ha(slave, 'slave', master.ip))
    ok(put_ha(master, 'master', slave.ip))
    ok(run_pairing(master, slave))
    ok(replicate(master, slave.ip))
    ok(master.wazo('wazo-sync'))
    granted = master.run('psql', '-X', '-q', '-A', '-t', '-w', '-c',
                         f'GRANT SELECT ON userfeatures TO {ROLE}',
                         f'host={slave.ip} dbname=asterisk user={ROLE} sslmode=require',
                         env={'PGCONNECT_TIMEOUT': '3', 'PGPASSFILE': master.passfile})
    assert granted.returncode == 0, granted.stderr
    assert slave.psql("SELECT relacl::text LIKE '%wazo_ha_replication=r/%' FROM pg_class "
                      "WHERE relname = 'userfeatures'") == 't', 'the grant is there'

    ok(put_ha(slave, 'disabled'))
    out = ok(converge(slave))
    assert 'rsyncd.conf: removed' in out
    assert 'replication access removed' in out
    assert f'dropped the replication role {ROLE} (what it owned given to asterisk' in out
    assert ours_left(slave) == []
    assert psql_from(master, ROLE, passfile=master.passfile).returncode != 0
    assert replicate(master, slave.ip, check=False).returncode == 1
    write(master, SYNCED, 'after\n')
    assert master.wazo('wazo-sync').returncode == 1
    with open(slave.host_path(SYNCED)) as f:
        assert f.read() == 'before\n'
    again = converge(slave)
    assert (again.returncode, again.stdout, again.stderr) == (0, '', '')


def test_a_disabled_node_refuses_postgres_from_the_old_master_while_sysconfd_trusts_it(pair):
    """A slave made disabled without PUT /ha (ha.conf written by wazo-ha-config set or by
    hand): wazo-sysconfd's `host asterisk postgres MASTER/32 trust` line stays (it is its own);
    our guard refuses postgres from that address before it, and goes with the line."""
    master, slave = pair
    ok(put_ha(slave, 'slave', master.ip))
    ok(converge(slave))
    with open(slave.ha_conf, 'w') as f:
        json.dump({'node_type': 'disabled', 'remote_address': ''}, f)
    out = ok(converge(slave))
    assert "host all postgres 198.18.0.1/32 reject (wazo-sysconfd's trust line" in out
    lines = hba(slave).splitlines()
    assert lines[1] == 'host all postgres 198.18.0.1/32 reject'
    assert lines[-1] == 'host asterisk postgres 198.18.0.1/32 trust', 'left to sysconfd'
    refused = psql_from(master, 'postgres')
    assert refused.returncode != 0
    assert 'pg_hba.conf rejects connection for host "198.18.0.1", user "postgres"' in refused.stderr
    again = converge(slave)
    assert (again.returncode, again.stdout, again.stderr) == (0, '', '')
    ok(put_ha(slave, 'disabled'))   # sysconfd removes its line: the guard goes with it
    assert 'guard removed' in ok(converge(slave))
    assert ours_left(slave) == []


def test_a_failed_restart_is_not_tried_again_every_minute(pair):
    """The idle slave's restart fails (its restart command exits 1): that run fails, and says
    so; the next runs do not restart again for the same conf.d content, and the restart stays
    pending in wazo-ha-status."""
    master, slave = pair
    slave.write_settings(database={'restart_command': '/bin/false'})
    try:
        with open(slave.ha_conf, 'w') as f:
            json.dump({'node_type': 'slave', 'remote_address': master.ip}, f)
        first = converge(slave)
        assert first.returncode == 1 and '/bin/false failed' in first.stderr, first.stderr
        for _ in range(2):
            again = converge(slave)
            assert (again.returncode, again.stdout, again.stderr) == (0, '', '')
        status = slave.wazo('wazo-ha-status')
        assert 'WARNING: PostgreSQL must be restarted for listen_addresses' in status.stdout
    finally:
        slave.write_settings()


def test_pair_receive_with_malformed_input_is_bad_input(pair):
    """wazo-ha-config pair-receive (the slave's side of wazo-sync -i) reading what is not the
    pairing protocol: exit 2, the reason said, nothing done."""
    _, slave = pair
    result = slave.wazo('wazo-ha-config', 'pair-receive', input='hello\nend\n')
    assert result.returncode == 2, result.stdout + result.stderr
    assert 'not the wazo-sync -i pairing protocol' in result.stderr
    assert slave.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{ROLE}'") == '0'


SILENT = """import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5432))
s.listen(8)
print('listening', flush=True)
held = []
end = time.monotonic() + 300
while time.monotonic() < end:
    held.append(s.accept())
"""


@pytest.mark.fresh_testbed("replaces the master's PostgreSQL by a listener that never answers")
def test_an_old_master_that_never_answers_does_not_keep_a_former_slave_open(pair):
    """Continuous mode; the old master accepts TCP on its PostgreSQL port and never answers
    (DROP SUBSCRIPTION would wait for it): PUT /ha disabled on the slave, one converge run
    closes every way in first, drops the subscription without its slot after the statement
    timeout, and leaves nothing of ours but the installation's conf.d lines."""
    master, slave = configured_continuous(pair)
    master.stop_postgres()
    silent = master.popen('/usr/bin/python3', '-c', SILENT, master.ip, stdout=subprocess.PIPE,
                          text=True)
    try:
        assert silent.stdout.readline() == 'listening\n'
        ok(put_ha(slave, 'disabled'))
        out = ok(converge(slave))
        assert 'rsyncd.conf: removed' in out and 'replication access removed' in out
        assert f'dropped the replication role {ROLE}' in out
        assert ('PostgreSQL: dropped the subscription wazo_ha; its slot' in out and
                'stays on 198.18.0.1, which did not let us drop it in 20s' in out), out
        assert ours_left(slave) == [INSTALLED]
    finally:
        silent.kill()
        silent.wait()


def test_wazo_sync_init_on_a_continuous_master_just_configured_through_put_ha(pair):
    """Continuous mode: PUT /ha on both nodes, then `wazo-sync -i` at once, before any cron
    converge ran on the master: it converges the master first (the stream role, its block),
    then pairs."""
    master, slave = pair
    continuous_settings(master)
    continuous_settings(slave)
    ok(put_ha(slave, 'slave', master.ip))
    ok(put_ha(master, 'master', slave.ip))
    assert master.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'wazo_ha_stream'") == '0'
    out = ok(run_pairing(master, slave))
    assert 'created the stream role wazo_ha_stream' in out, out
    assert master.psql("SELECT rolcanlogin FROM pg_roles WHERE rolname = 'wazo_ha_stream'") == 't'
    assert f'on the slave: PostgreSQL: created the replication role {ROLE}' in out


def test_set_run_again_restarts_nothing_while_a_restart_is_pending(pair):
    """wazo-ha-config set restarts PostgreSQL for what it wrote; its restart failed (the
    restart command exits 1, ha.conf is left as it was), the restart is pending, and set run
    again writes ha.conf without trying the restart again, then changes nothing."""
    master, slave = pair
    slave.write_settings(database={'restart_command': '/bin/false'})
    try:
        first = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave',
                           '--remote-address', master.ip)
        assert first.returncode == 1 and '/bin/false failed' in first.stderr, first.stderr
        # the refused run wrote no ha.conf: this one does, without restarting; then nothing
        again = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave',
                           '--remote-address', master.ip)
        assert again.returncode == 0, again.stdout + again.stderr
        assert 'changed: /etc/xivo/ha.conf' in again.stdout and 'restarted' not in again.stdout
        third = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave',
                           '--remote-address', master.ip)
        assert (third.returncode, third.stderr) == (0, ''), third.stdout + third.stderr
        assert 'nothing to change' in third.stdout and 'restarted' not in third.stdout
        assert 'must be restarted for listen_addresses' in slave.wazo('wazo-ha-status').stdout
    finally:
        slave.write_settings()


def test_postgresql_stopped_at_installation_still_gets_the_installation_lines(pair):
    """debian/postinst's converge while PostgreSQL is stopped (an installation at boot, a
    cluster down): the catalog cannot be read, yet conf.d/wazo-ha.conf is written (its
    wal_level = logical is then in place for the PostgreSQL start, or PUT /ha's restart), the
    failed reload tolerated, and the run fails with one line saying so; once PostgreSQL runs,
    the next converge does the rest and changes no file."""
    node, _ = pair
    node.write_settings(database={'mode': None}, check={**FAST['check'], 'run_for': '6'})
    node.stop_postgres()
    try:
        r = converge(node)
        conf = wazo_ha_conf(node)
    finally:
        node.start_postgres()
    assert r.returncode == 1, r.stdout + r.stderr
    error = [line for line in r.stderr.splitlines() if 'PostgreSQL cannot be read' in line]
    assert len(error) == 1 and 'not reloaded' in error[0], r.stderr
    assert conf == INSTALLED_LINES
    again = ok(converge(node))
    assert 'wazo-ha.conf' not in again, again
    assert wazo_ha_conf(node) == INSTALLED_LINES


def test_a_failed_reload_of_a_running_postgresql_fails_the_converge(pair):
    """Only a PostgreSQL that cannot be read (stopped, at installation) is excused a failed
    reload: on a running one the new files would not be in force, so the converge fails and
    says which command failed, and goes on failing at the next runs, which find the files
    already written, until a reload succeeds; then it is silent again."""
    node, _ = pair
    node.write_settings(database={'mode': None, 'reload_command': '/bin/false'})
    conf = os.path.join(node.pgdata, 'conf.d', 'wazo-ha.conf')
    if os.path.exists(conf):
        os.unlink(conf)
    r = converge(node)
    assert r.returncode == 1, r.stdout + r.stderr
    assert '/bin/false' in r.stderr and 'not reloaded' not in r.stderr, r.stderr
    assert wazo_ha_conf(node) == INSTALLED_LINES, 'the files are written all the same'
    again = converge(node)
    assert again.returncode == 1 and '/bin/false' in again.stderr, 'the reload is still owed'
    node.write_settings(database={'mode': None})
    assert 'PostgreSQL reloaded (owed since a reload that failed)' in ok(converge(node))
    assert ok(converge(node)) == ''
