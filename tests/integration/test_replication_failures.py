"""A replication interrupted at any point leaves the slave exactly as it was."""

import signal
import time

import pytest

from datagen import installation_sql
from replication_helpers import configure, replicate, snapshot

APP = 'xivo-master-slave-db-replication'


@pytest.fixture(scope='module')
def large_master_sql():
    return installation_sql(users=40000, history=0)


@pytest.fixture
def ha(pair, large_master_sql):
    master, slave = pair
    configure(master, slave)
    slave.psql(installation_sql(users=50, history=100))  # the slave's previous content
    master.psql(large_master_sql)
    return master, slave


def indexes(node):
    return node.psql("SELECT string_agg(indexdef, E'\\n' ORDER BY indexname) FROM pg_indexes "
                     "WHERE schemaname = 'public'")


def test_large_full_copy_rebuilds_the_plain_indexes_it_drops(ha):
    master, slave = ha
    before = indexes(slave)
    assert 'userfeatures__idx__' in before or 'CREATE INDEX' in before
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert indexes(slave) == before
    assert slave.psql("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                      "WHERE NOT i.indisvalid") == '0'
    assert slave.psql('SELECT count(*) FROM userfeatures') == master.psql('SELECT count(*) FROM userfeatures')


def slave_activity(slave):
    return slave.psql(f"SELECT coalesce(string_agg(query, ' || '), '') FROM pg_stat_activity "
                      f"WHERE application_name = '{APP}' AND state = 'active'")


def wait_for(predicate, timeout=60, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError('timed out waiting')


def wait_until_the_slave_drops_the_session(slave):
    """The slave rolls back the dead run's transaction (keepalive timeouts set by the run)."""
    wait_for(lambda: slave.psql(f"SELECT count(*) FROM pg_stat_activity "
                                f"WHERE application_name = '{APP}'") == '0', timeout=90, step=0.5)


def start_replication(master):
    return master.popen('/usr/bin/python3', f'{master.env["PYTHONPATH"]}/bin/{APP}',
                        stdout=-1, stderr=-1, text=True)


@pytest.mark.parametrize('moment', ['COPY "endpoint_sip"', 'COPY "userfeatures"'])
def test_sigkill_leaves_the_slave_unchanged_and_the_next_run_completes(ha, moment):
    """Killed early in the copy (endpoint_sip comes first) and late (userfeatures)."""
    master, slave = ha
    before = snapshot(slave)
    proc = start_replication(master)
    try:
        wait_for(lambda: moment in slave_activity(slave))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    wait_until_the_slave_drops_the_session(slave)
    assert snapshot(slave) == before
    assert indexes(slave) == indexes(master), 'dropped indexes came back with the rollback'
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert snapshot(slave) != before


def test_link_cut_mid_copy_fails_cleanly(ha):
    master, slave = ha
    before = snapshot(slave)
    proc = start_replication(master)
    try:
        wait_for(lambda: 'COPY' in slave_activity(slave))
        slave.link(up=False)
        out, err = proc.communicate(timeout=120)
    finally:
        slave.link(up=True)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    assert 'the slave is unchanged' in err, err
    wait_until_the_slave_drops_the_session(slave)
    assert snapshot(slave) == before
    result = replicate(master)
    assert result.returncode == 0, result.stderr


def test_slave_postgresql_restart_mid_copy(ha):
    master, slave = ha
    before = snapshot(slave)
    proc = start_replication(master)
    try:
        wait_for(lambda: 'COPY' in slave_activity(slave))
        slave.stop_postgres(mode='fast')
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        slave.start_postgres()
    assert proc.returncode == 1
    assert len(err.strip().splitlines()) == 1, err
    assert snapshot(slave) == before
    result = replicate(master)
    assert result.returncode == 0, result.stderr
