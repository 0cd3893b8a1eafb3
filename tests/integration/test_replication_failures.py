"""A replication interrupted at any point leaves the slave exactly as it was."""

import os
import signal
import time

import psycopg2
import pytest

import baselines
from datagen import installation_sql
from replication_helpers import configure, replicate, snapshot, table_rows

APP = 'xivo-master-slave-db-replication'


def large_master(master, slave, _other):
    configure(master, slave)
    slave.psql(installation_sql(users=50, history=100))  # the slave's previous content
    master.psql(installation_sql(users=40000, history=0))


@pytest.fixture
def ha(request):
    """Configured and paired, 40000 users on the master, 50 on the slave, nothing replicated.
    Shared: reset to this baseline before each test (a killed run, a cut link or a restarted
    cluster included)."""
    master, slave, _ = baselines.shaped(request, baselines.PG, 'replication-failures',
                                        large_master)
    return master, slave


def indexes(node):
    return node.psql("SELECT string_agg(indexdef, E'\\n' ORDER BY indexname) FROM pg_indexes "
                     "WHERE schemaname = 'public'")


def constraints(node):
    """Every constraint of the public tables: name, definition, whether it was validated."""
    return node.psql("SELECT string_agg(c.relname || ' ' || k.conname || ' ' || "
                     "pg_get_constraintdef(k.oid) || ' ' || k.convalidated, E'\\n' "
                     "ORDER BY c.relname, k.conname) FROM pg_constraint k "
                     "JOIN pg_class c ON c.oid = k.conrelid "
                     "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'")


def rebuilt(master):
    """(indexes, foreign keys) the last run's log says it rebuilt."""
    with open(master.log_file) as f:
        line = [x for x in f if 'slave write phases' in x][-1]
    words = line.split(', copy ')[1].split()
    return int(words[2]), int(words[5])


def test_large_full_copy_rebuilds_the_indexes_and_constraints_it_drops(ha):
    master, slave = ha
    before_indexes, before_constraints = indexes(slave), constraints(slave)
    assert 'userfeatures_pkey' in before_constraints and 'FOREIGN KEY' in before_constraints
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    n_indexes, n_foreign_keys = rebuilt(master)
    assert n_indexes > 40 and n_foreign_keys > 5, (n_indexes, n_foreign_keys)
    assert indexes(slave) == before_indexes
    assert constraints(slave) == before_constraints
    assert slave.psql("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                      "WHERE NOT i.indisvalid OR NOT i.indisready") == '0'
    assert slave.psql('SELECT count(*) FROM userfeatures') == master.psql('SELECT count(*) FROM userfeatures')
    # the constraints work again: a duplicate key and a dangling reference are refused
    for statement in ('INSERT INTO userfeatures (id, uuid, tenant_uuid, firstname) '
                      'SELECT id, uuid, tenant_uuid, firstname FROM userfeatures LIMIT 1',
                      'INSERT INTO line_extension VALUES (1, 2147483647, false)'):
        with pytest.raises(Exception, match='violates'):
            slave.psql(statement)


def test_rows_of_the_master_that_break_a_constraint_are_loaded_with_the_constraints_kept(pair):
    """A master whose rows were once loaded with triggers off may hold a dangling reference;
    the original procedure copied it; so must we, without leaving a constraint off."""
    master, slave = pair
    configure(master, slave)
    master.psql(installation_sql(users=6000, history=0))
    master.psql('SET session_replication_role = replica; '
                'INSERT INTO line_extension SELECT min(id), 2147483647, false FROM linefeatures')
    before_constraints = constraints(slave)
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    with open(master.log_file) as f:
        log = f.read()
    assert 'writing again with the constraints kept' in log and 'line_extension_extension_id_fkey' in log
    assert rebuilt(master)[1] == 0
    for table in ('line_extension', 'extensions', 'linefeatures', 'userfeatures'):
        assert table_rows(slave, table) == table_rows(master, table), table
    assert constraints(slave) == before_constraints
    assert indexes(slave) == indexes(master)
    # and the next run finds nothing to do
    result = replicate(master)
    assert result.returncode == 0 and 'already up to date' in result.stdout, result.stdout


def wait_for_statement(slave, text, timeout=60):
    """Poll the slave's running statements through one connection (a few hundred
    microseconds a poll: short statements are caught too). PostgreSQL shows the first
    1024 bytes of a statement: `text` must be in them."""
    conn = psycopg2.connect(slave.local_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                cur.execute('SELECT query FROM pg_stat_activity '
                            'WHERE application_name = %s AND state = %s', (APP, 'active'))
                if any(text in q for q, in cur.fetchall()):
                    return
        raise AssertionError(f'timed out waiting for {text!r} on the slave')
    finally:
        conn.close()


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


def interrupted_run(master, slave, moment, disrupt, restore=lambda: None):
    """Start a replication and call disrupt(process) while the slave runs `moment`; then
    restore(). Returns the run's exit status and stderr."""
    proc = start_replication(master)
    try:
        wait_for_statement(slave, moment)
        disrupt(proc)
        _, err = proc.communicate(timeout=120)
    finally:
        restore()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def assert_clean_failure(code, err):
    assert code == 1
    assert len(err.strip().splitlines()) == 1, err
    assert 'the slave is unchanged' in err, err


@pytest.mark.parametrize('moment', ['COPY "endpoint_sip"', 'COPY "userfeatures"',
                                    'ADD CONSTRAINT line_extension_pkey',
                                    'ALTER TABLE "public".'])
def test_sigkill_leaves_the_slave_unchanged_and_the_next_run_completes(ha, moment):
    """Killed early in the copy (endpoint_sip comes first), late (userfeatures), while a
    dropped constraint is built again, and while the foreign keys are added back (the only
    statements that name a schema)."""
    master, slave = ha
    before, before_constraints = snapshot(slave), constraints(slave)
    code, _ = interrupted_run(master, slave, moment, lambda proc: proc.send_signal(signal.SIGKILL))
    assert code == -signal.SIGKILL
    wait_until_the_slave_drops_the_session(slave)
    assert snapshot(slave) == before
    assert indexes(slave) == indexes(master), 'dropped indexes came back with the rollback'
    assert constraints(slave) == before_constraints, 'dropped constraints came back too'
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert snapshot(slave) != before


def test_link_cut_mid_copy_fails_cleanly(ha):
    master, slave = ha
    before = snapshot(slave)
    assert_clean_failure(*interrupted_run(master, slave, 'COPY', lambda _: slave.link(up=False),
                                          restore=lambda: slave.link(up=True)))
    wait_until_the_slave_drops_the_session(slave)
    assert snapshot(slave) == before
    result = replicate(master)
    assert result.returncode == 0, result.stderr


def test_slave_postgresql_restart_mid_copy(ha):
    master, slave = ha
    before = snapshot(slave)
    assert_clean_failure(*interrupted_run(master, slave, 'COPY',
                                          lambda _: slave.stop_postgres(mode='fast'),
                                          restore=slave.start_postgres))
    assert snapshot(slave) == before
    result = replicate(master)
    assert result.returncode == 0, result.stderr


def test_master_session_ended_before_the_copy_is_a_clear_failure(ha):
    """The master's session dies after the comparison, before its rows are read: the run
    holds at the slave's TRUNCATE (a lock the test holds) while the session is ended."""
    master, slave = ha
    before = snapshot(slave)
    blocker = psycopg2.connect(slave.local_dsn)

    def end_the_master_session(_):
        master.psql(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE application_name = '{APP}'")
        blocker.rollback()

    try:
        with blocker.cursor() as cur:
            cur.execute('LOCK TABLE userfeatures IN ACCESS SHARE MODE')
        code, err = interrupted_run(master, slave, 'TRUNCATE', end_the_master_session)
    finally:
        blocker.close()
    assert_clean_failure(code, err)
    assert 'on the master' in err, err
    wait_until_the_slave_drops_the_session(slave)
    assert snapshot(slave) == before
    result = replicate(master)
    assert result.returncode == 0, result.stderr


def test_memory_stays_bounded_with_large_rows(pair):
    """200 rows of 2 MB (400 MB on the wire): the master may read ahead of the slave by a
    bounded number of bytes, not of rows."""
    master, slave = pair
    configure(master, slave)
    master.psql("INSERT INTO staticvoicemail (filename, category, var_name, var_val) "
                "SELECT 'voicemail.conf', 'general', 'v' || g, repeat(md5(g::text), 65536) "
                "FROM generate_series(1, 200) g")
    proc = start_replication(master)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read()
    assert os.waitstatus_to_exitcode(status) == 0, err
    peak_mb = usage.ru_maxrss / 1024
    assert peak_mb < 150, f'peak RSS {peak_mb:.0f} MB'
    digest = "SELECT md5(string_agg(md5(var_val), '' ORDER BY id)) FROM staticvoicemail"
    assert slave.psql(digest) == master.psql(digest)


def test_commented_and_clustered_indexes_are_left_in_place(pair):
    """What a drop and rebuild would lose (a comment, the CLUSTER mark) stays: such an index,
    and the constraints of its table, are kept through the load."""
    master, slave = pair
    configure(master, slave)
    master.psql(installation_sql(users=6000, history=0))
    slave.psql("COMMENT ON INDEX userfeatures__idx__lastname IS 'asked by the admin'; "
               "COMMENT ON CONSTRAINT voicemail_pkey ON voicemail IS 'noted'; "
               "CLUSTER linefeatures USING linefeatures_pkey")
    before = indexes(slave), constraints(slave)
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert (indexes(slave), constraints(slave)) == before
    assert slave.psql("SELECT obj_description('userfeatures__idx__lastname'::regclass, 'pg_class')") == \
        'asked by the admin'
    assert slave.psql("SELECT obj_description(oid, 'pg_constraint') FROM pg_constraint "
                      "WHERE conname = 'voicemail_pkey'") == 'noted'
    assert slave.psql("SELECT indisclustered FROM pg_index "
                      "WHERE indexrelid = 'linefeatures_pkey'::regclass") == 't'
    for table in ('userfeatures', 'voicemail', 'linefeatures', 'extensions'):
        assert table_rows(slave, table) == table_rows(master, table), table
    assert rebuilt(master)[0] > 10, 'the other tables still had their indexes rebuilt'
