"""A master rebuilt at the same address (disk lost, reinstalled: a fresh PostgreSQL cluster,
paired again) never wipes the slave: replication and wazo-sync refuse and change nothing, the
slave keeps its data and files, until the administrator runs them with --replace-slave."""

import email
import email.policy
import os
import shutil
import subprocess
import tempfile

import pytest

from datagen import installation_sql
from replication_helpers import configure, run_pairing, snapshot
from stream_helpers import continuous_settings, setup_streaming, stream, stream_ok
from testbed import template_cluster

REFUSAL = ('the master at 198.18.0.1 is not the cluster this slave copied from (rebuilt?): '
           'promote the slave or run with --replace-slave')
KEPT = '/etc/asterisk/extensions_extra.d/kept.conf'


def origin_of(slave):
    return slave.psql('SELECT system_identifier FROM wazo_ha.origin')


def system_of(node):
    return node.psql('SELECT system_identifier::text FROM pg_control_system()')


def rebuild(master):
    """The master's disk is lost: a fresh cluster (initdb: a new system identifier) with the
    Wazo schema, no state, no key, no password file; HA set up again on it."""
    master.stop_postgres()
    scratch = tempfile.mkdtemp(prefix='wazo-ha-rebuilt-')
    os.chmod(scratch, 0o755)
    try:
        fresh = template_cluster(scratch)
        shutil.rmtree(master.pgdata)
        shutil.copytree(fresh, master.pgdata, symlinks=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    subprocess.run(['chown', '-R', 'postgres:postgres', master.pgbase], check=True)
    with open(os.path.join(master.pgdata, 'postgresql.conf'), 'a') as f:
        f.write(f"\nunix_socket_directories = '{master.pgsock}'\nlisten_addresses = ''\n"
                "include_dir = 'conf.d'\n")
    master.start_postgres()
    for path in (master.state_dir,):
        shutil.rmtree(path)
        os.makedirs(path)
    for path in (master.passfile, master.host_path('/root/.ssh/xivo_id_rsa'),
                 master.host_path('/root/.ssh/xivo_id_rsa.pub'), master.host_path(KEPT)):
        if os.path.exists(path):
            os.unlink(path)


def replication_mails(node):
    out = []
    for text in node.mails():
        mail = email.message_from_string(text, policy=email.policy.default)
        if mail['Subject'] == 'Slave replication failed':
            out.append(mail.get_content())
    return out


@pytest.mark.fresh_testbed("rebuilds the master's cluster: a new system identifier")
def test_a_rebuilt_master_is_refused_until_replace_slave(pair):
    master, slave = pair
    master.psql(installation_sql(users=50, history=100))   # what the old master held
    configure(master, slave)
    os.makedirs(os.path.dirname(master.host_path(KEPT)), exist_ok=True)
    with open(master.host_path(KEPT), 'w') as f:
        f.write('[kept]\n')
    first = master.wazo('xivo-master-slave-db-replication', timeout=600)
    assert first.returncode == 0, first.stderr
    assert origin_of(slave) == system_of(master), 'the first copy records the master cluster'
    synced = master.wazo('wazo-sync', timeout=120)
    assert synced.returncode == 0, synced.stderr
    assert os.path.exists(slave.host_path(KEPT))
    old_system = system_of(master)
    for node, lines in ((master, ['ok: pairing: the slave database accepts wazo_ha_replication',
                                  'ok: pg_hba.conf', 'ok: rsync modules', 'ok: peer']),
                        (slave, ['ok: pg_hba.conf', 'ok: replication role: wazo_ha_replication: '
                                 'as a slave needs it', 'ok: rsync modules', 'ok: sentinels'])):
        checked = node.wazo('wazo-ha-config', 'check')
        assert checked.returncode == 0, checked.stdout + checked.stderr
        for line in lines:
            assert line in checked.stdout, checked.stdout

    rebuild(master)
    assert system_of(master) != old_system
    r = master.wazo('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', slave.ip)
    assert r.returncode == 0, r.stderr
    assert run_pairing(master, slave).returncode == 0, 'paired again'
    before = snapshot(slave)

    refused = master.wazo('xivo-master-slave-db-replication', timeout=600)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr.strip().endswith(REFUSAL), refused.stderr
    assert any(REFUSAL in body for body in replication_mails(master)), master.mails()
    assert snapshot(slave) == before, 'the slave database is unchanged'
    assert origin_of(slave) == old_system

    os.makedirs(os.path.dirname(master.host_path('/etc/asterisk/extensions_extra.d/x')),
                exist_ok=True)
    no_sync = master.wazo('wazo-sync', timeout=120)
    assert no_sync.returncode == 1, no_sync.stdout + no_sync.stderr
    assert REFUSAL in no_sync.stderr
    assert os.path.exists(slave.host_path(KEPT)), 'the slave keeps its files'
    status = master.wazo('wazo-ha-status')
    assert REFUSAL in status.stdout and status.returncode == 2

    replaced = master.wazo('xivo-master-slave-db-replication', '--replace-slave', timeout=600)
    assert replaced.returncode == 0, replaced.stderr
    assert origin_of(slave) == system_of(master)
    assert snapshot(slave) != before, "the slave now holds the new master's data"
    again = master.wazo('wazo-sync', timeout=120)
    assert again.returncode == 0, again.stderr
    assert not os.path.exists(slave.host_path(KEPT)), 'the slave follows the new master'


@pytest.mark.fresh_testbed("rebuilds the master's cluster: a new system identifier")
def test_continuous_mode_a_rebuilt_master_is_never_handed_off_from(pair):
    """The slave's own wazo-ha-stream would copy a rebuilt master afresh (its slot is gone):
    the hand-off compares the master's system identifier (IDENTIFY_SYSTEM) with the slave's
    record first, and refuses."""
    master, slave = pair
    master.psql(installation_sql(users=30, history=40))
    setup_streaming(master, slave)
    assert origin_of(slave) == system_of(master), 'the hand-off records the master cluster'

    rebuild(master)
    r = master.wazo('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', slave.ip)
    assert r.returncode == 0, r.stderr
    assert run_pairing(master, slave).returncode == 0, 'paired again'
    before = snapshot(slave)
    refused = stream(slave)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert ('the master at 198.18.0.1 is not the cluster this slave copied from (rebuilt?): '
            'promote the slave or run xivo-master-slave-db-replication --replace-slave on the '
            'master') in refused.stderr
    assert snapshot(slave) == before, 'the slave database is unchanged'
    status = slave.wazo('wazo-ha-status')
    assert status.returncode == 2 and 'is not the cluster this slave copied from' in status.stdout

    master.wazo('xivo-master-slave-db-replication', '--replace-slave', timeout=600)
    assert origin_of(slave) == system_of(master)
    assert 'hand-off done' in stream_ok(slave)


@pytest.mark.fresh_testbed("rebuilds the master's cluster: a new system identifier")
def test_a_rebuilt_master_pushes_no_file_while_the_slave_database_is_down(pair):
    """The slave's record cannot be read (its PostgreSQL restarts, is upgraded, a firewall):
    wazo-sync cannot tell a rebuilt master from the old one, so it pushes nothing, until
    --replace-slave by hand."""
    master, slave = pair
    master.psql(installation_sql(users=5, history=5))
    configure(master, slave)
    os.makedirs(os.path.dirname(master.host_path(KEPT)), exist_ok=True)
    with open(master.host_path(KEPT), 'w') as f:
        f.write('[kept]\n')
    assert master.wazo('xivo-master-slave-db-replication', timeout=600).returncode == 0
    assert master.wazo('wazo-sync', timeout=120).returncode == 0
    assert os.path.exists(slave.host_path(KEPT))
    rebuild(master)
    r = master.wazo('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', slave.ip)
    assert r.returncode == 0, r.stderr
    assert run_pairing(master, slave).returncode == 0, 'paired again'
    slave.stop_postgres()
    try:
        refused = master.wazo('wazo-sync', timeout=120)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert 'cannot tell which cluster the slave copied from: nothing pushed' \
            in refused.stderr, refused.stderr
        assert os.path.exists(slave.host_path(KEPT)), 'the slave keeps its files'
        replaced = master.wazo('wazo-sync', '--replace-slave', timeout=120)
        assert replaced.returncode == 0, replaced.stdout + replaced.stderr
        assert not os.path.exists(slave.host_path(KEPT)), '--replace-slave pushes anyway'
    finally:
        slave.start_postgres()


def mails_about(node, subject):
    out = []
    for text in node.mails():
        mail = email.message_from_string(text, policy=email.policy.default)
        if mail['Subject'].startswith(subject):
            out.append(mail.get_content())
    return out


@pytest.mark.fresh_testbed("rebuilds the master's cluster: a new system identifier")
def test_continuous_mode_the_slave_gives_no_telephony_back_to_a_rebuilt_master(pair):
    """The slave serves (failover); the master comes back rebuilt at the same address and
    paired again. The slave's wazo-ha-stream logs into it and finds another cluster than the
    one it copied from: the failover check keeps serving (no failback), says so once by mail,
    wazo-ha-status is CRITICAL naming the master and the fix. --replace-slave --force on the
    master then replaces the slave's data, and the slave gives telephony back."""
    master, slave = pair
    master.psql(installation_sql(users=20, history=20))
    setup_streaming(master, slave)
    old_system = system_of(master)
    continuous_settings(slave, check={'run_for': '6'})
    master.link(up=False)
    r = slave.wazo('xivo-check-master-status', timeout=120)
    assert r.returncode == 0, r.stderr
    assert slave.services_state() == 'all', 'failed over'

    rebuild(master)
    master.link(up=True)
    r = master.wazo('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', slave.ip)
    assert r.returncode == 0, r.stderr
    assert run_pairing(master, slave).returncode == 0, 'paired again'
    assert system_of(master) != old_system
    looked = stream(slave)
    assert looked.returncode == 0, looked.stdout + looked.stderr
    held = (f'the master at {master.ip} is not the cluster this slave copied from (rebuilt?): '
            'promote the slave or run with --replace-slave; this slave keeps serving telephony')
    continuous_settings(slave, check={'run_for': '7'})
    for _ in range(2):  # the master answers for longer than up_after (4 s)
        r = slave.wazo('xivo-check-master-status', timeout=120)
        assert r.returncode == 0, r.stderr
        assert slave.services_state() == 'all', 'no failback to the rebuilt master'
    assert held in open(slave.log_file).read()
    sent = mails_about(slave, 'Failback held on ')
    assert len(sent) == 1 and held in sent[0], slave.mails()
    assert mails_about(slave, 'Failback: ') == []
    status = slave.wazo('wazo-ha-status')
    assert status.returncode == 2, status.stdout
    assert f'CRITICAL: {held}' in status.stdout, status.stdout
    assert origin_of(slave) == old_system, 'the slave data are untouched'

    replaced = master.wazo('xivo-master-slave-db-replication', '--replace-slave', '--force',
                           timeout=600)
    assert replaced.returncode == 0, replaced.stdout + replaced.stderr
    assert '--replace-slave: the slave now takes this master cluster' in replaced.stdout
    assert origin_of(slave) == system_of(master)
    assert slave.services_state() == 'all', 'still serving until its next check'
    assert stream(slave).returncode == 0
    r = slave.wazo('xivo-check-master-status', timeout=120)
    assert r.returncode == 0, r.stderr
    assert slave.services_state() == 'base', 'failed back to the accepted master'
    assert len(mails_about(slave, 'Failback: ')) == 1
    assert len(mails_about(slave, 'Failback held on ')) == 1
    assert 'hand-off done' in stream_ok(slave)
