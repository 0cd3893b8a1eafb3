"""Replication stays exact where row xmins cannot tell: a column added with a volatile
default, a master restored from a backup, rows of excluded tables left without their parent,
and the daily verification that compares every copied table by content."""

import json
import os
import time

import pytest

import baselines
from datagen import installation_sql
from replication_helpers import (assert_slave_consistent, broken_foreign_keys, configure,
                                 replicate, table_rows, tables_copied)
from testbed import PG_BIN, sh

TENANT = '00000000-0000-4000-8000-0000000000d1'
USER = '00000000-0000-4000-8000-0000000000d2'


def replicated_once(master, slave, _other):
    master.psql(installation_sql(users=200, history=200))
    configure(master, slave)
    assert replicate(master).returncode == 0


@pytest.fixture
def ha(request):
    """Configured, paired, 200 users, replicated once. Shared: reset to this baseline
    before each test (both clusters, the tracking record and every state file with them)."""
    master, slave, _ = baselines.shaped(request, baselines.PG, 'replication-exact',
                                        replicated_once)
    return master, slave


def log_of(node):
    with open(node.log_file) as f:
        return f.read()


def tracking_record(master):
    with open(os.path.join(master.state_dir, 'replication-tracking.json')) as f:
        return json.load(f)


def test_a_column_added_with_a_volatile_default_is_compared_by_content(ha):
    """A Wazo upgrade adds a column with DEFAULT now() on both nodes: PostgreSQL evaluates it
    once per node without rewriting a row, so the nodes differ while no xmin moved."""
    master, slave = ha
    for node in (master, slave):
        node.psql('ALTER TABLE userfeatures ADD COLUMN upgraded_at timestamptz DEFAULT now()')
        time.sleep(0.01)
    assert table_rows(master, 'userfeatures') != table_rows(slave, 'userfeatures')
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert tables_copied(master) == ['userfeatures']
    assert table_rows(master, 'userfeatures') == table_rows(slave, 'userfeatures')
    result = replicate(master)
    assert 'already up to date' in result.stdout, result.stdout


def restore_master_from(master, backup, point_in_time):
    """Replace the master's cluster by the base backup (kept: /var/lib/wazo-ha)."""
    master.stop_postgres()
    sh('rm', '-rf', master.pgdata)
    sh('mv', backup, master.pgdata)
    if point_in_time:  # recover to the end of the backup, then a new timeline
        with open(os.path.join(master.pgdata, 'postgresql.auto.conf'), 'a') as f:
            f.write("\nrestore_command = '/bin/false'\nrecovery_target = 'immediate'\n"
                    "recovery_target_action = 'promote'\n")
        open(os.path.join(master.pgdata, 'recovery.signal'), 'w').close()
    sh('chown', '-R', 'postgres:postgres', master.pgdata)
    master.start_postgres()
    for _ in range(100):
        if master.psql('SELECT pg_is_in_recovery()') == 'f':
            return
        time.sleep(0.1)
    raise AssertionError('the restored master stays in recovery')


@pytest.mark.parametrize('point_in_time', [False, True], ids=['same-timeline', 'new-timeline'])
def test_a_master_restored_from_a_base_backup_is_not_trusted(ha, point_in_time):
    """pg_basebackup of the master, then a change and a run; the master's cluster is then
    replaced by the backup (WAL replayed to its end: same timeline, WAL position behind the
    record; or a point-in-time recovery to the backup's end: a new timeline). Rows written
    right after the restore get transaction ids below the record's horizon, and traffic pushes
    the next id past it, so the ids alone cannot tell."""
    master, slave = ha
    backup = os.path.join(master.pgbase, 'backup')
    sh('runuser', '-u', 'postgres', '--', f'{PG_BIN}/pg_basebackup', '-h', master.pgsock,
       '-U', 'postgres', '-D', backup, '-X', 'stream', '-c', 'fast')
    # traffic between the backup and the last run: transactions, and WAL
    master.psql("UPDATE userfeatures SET lastname = 'after the backup'")
    master.psql('DO $$ BEGIN FOR i IN 1..30 LOOP PERFORM pg_current_xact_id(); COMMIT; '
                'END LOOP; END $$')
    assert replicate(master).returncode == 0
    recorded = tracking_record(master)['master']
    restore_master_from(master, backup, point_in_time)
    master.psql("UPDATE voicemail SET fullname = 'after the restore' WHERE uniqueid = "
                "(SELECT min(uniqueid) FROM voicemail)")
    master.psql('DO $$ BEGIN FOR i IN 1..60 LOOP PERFORM pg_current_xact_id(); COMMIT; '
                'END LOOP; END $$')
    # the scenario: ids went past the record, what was written after the restore is below it
    assert int(master.psql('SELECT pg_current_xact_id()::text')) > recorded['next']
    assert int(master.psql("SELECT xmin::text FROM voicemail WHERE fullname = 'after the restore'")) \
        < recorded['xmin']
    if not point_in_time:
        assert int(master.psql("SELECT pg_current_wal_lsn() - '0/0'")) < recorded['lsn']
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert ('another WAL timeline' if point_in_time else 'WAL position is behind') in log_of(master)
    assert tables_copied(master) == ['userfeatures', 'voicemail']


def test_a_tenant_deleted_on_the_master_takes_the_slave_sessions_and_tokens_with_it(ha):
    """auth_session (excluded) -> auth_tenant and auth_refresh_token (excluded) -> auth_user
    are ON DELETE CASCADE, auth_token (excluded) -> auth_session too, and
    stat_switchboard_queue (excluded) -> queuefeatures: the slave's rows of those go as a
    DELETE on the slave would have taken them, in the same transaction."""
    master, slave = ha
    master.psql(f"""
        INSERT INTO auth_tenant (uuid, name, slug, parent_uuid, default_authentication_method)
            VALUES ('{TENANT}', 'gone', 'gone', '{TENANT}', 'native');
        INSERT INTO auth_user (uuid, username, tenant_uuid, purpose, authentication_method)
            VALUES ('{USER}', 'gone', '{TENANT}', 'user', 'default');
        INSERT INTO queuefeatures (tenant_uuid, name, displayname, number, context)
            SELECT tenant_uuid, 'sb-gone', 'SB', '', 'default' FROM context LIMIT 1""")
    assert replicate(master).returncode == 0
    slave.psql(f"""
        INSERT INTO auth_session (uuid, tenant_uuid, mobile)
            VALUES ('00000000-0000-4000-8000-0000000000e1', '{TENANT}', false);
        INSERT INTO auth_token (uuid, session_uuid, auth_id, pbx_user_uuid, xivo_uuid,
                                issued_t, expire_t, acl, metadata, user_agent, remote_addr)
            VALUES ('00000000-0000-4000-8000-0000000000e2', '00000000-0000-4000-8000-0000000000e1',
                    'gone', NULL, NULL, 0, 1, '{{}}', '', '', '');
        INSERT INTO auth_refresh_token (uuid, client_id, user_uuid, backend, login, mobile)
            VALUES ('00000000-0000-4000-8000-0000000000e3', 'app', '{USER}', 'native', 'gone', false);
        INSERT INTO stat_switchboard_queue (time, end_type, wait_time, queue_id)
            SELECT now(), 'abandoned', 1, id FROM queuefeatures WHERE name = 'sb-gone'""")
    kept = slave.psql('SELECT count(*) FROM auth_session')
    master.psql(f"DELETE FROM auth_user WHERE uuid = '{USER}'; "
                f"DELETE FROM auth_tenant WHERE uuid = '{TENANT}'; "
                "DELETE FROM queuefeatures WHERE name = 'sb-gone'")
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert broken_foreign_keys(slave) == {}
    assert slave.psql('SELECT count(*) FROM auth_session') == str(int(kept) - 1)
    for table in ('auth_token', 'auth_refresh_token', 'stat_switchboard_queue'):
        assert slave.psql(f'SELECT count(*) FROM {table}') == '0', table
    log = log_of(master)
    assert 'auth_session: 1 row deleted (ON DELETE CASCADE of auth_session_tenant_uuid_fkey)' in log
    assert 'auth_token: 1 row deleted' in log and 'stat_switchboard_queue: 1 row deleted' in log


def test_orphans_of_a_no_action_key_are_removed_and_set_null_is_applied(ha):
    """The same for keys of other kinds, added to excluded tables: NO ACTION leaves the rows to
    remove, SET NULL empties the column."""
    master, slave = ha
    for node in (master, slave):
        node.psql('ALTER TABLE stat_agent ADD COLUMN user_id integer REFERENCES userfeatures (id); '
                  'ALTER TABLE stat_queue ADD COLUMN user_id integer '
                  'REFERENCES userfeatures (id) ON DELETE SET NULL')
    slave.psql("INSERT INTO stat_agent (name, tenant_uuid, user_id) "
               "SELECT 'a', tenant_uuid, max(id) FROM userfeatures GROUP BY tenant_uuid; "
               "INSERT INTO stat_queue (name, tenant_uuid, user_id) "
               "SELECT 'q', tenant_uuid, max(id) FROM userfeatures GROUP BY tenant_uuid")
    master.psql('SET session_replication_role = replica; '
                'DELETE FROM userfeatures WHERE id = (SELECT max(id) FROM userfeatures)')
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert slave.psql('SELECT count(*) FROM stat_agent') == '0'
    assert slave.psql("SELECT count(*) FROM stat_queue WHERE name = 'q' AND user_id IS NULL") == '1'
    log = log_of(master)
    assert 'stat_agent: 1 row removed (NO ACTION' in log and 'stat_queue: 1 row set to NULL' in log


def fool_the_tracking(master, slave):
    """A difference the record cannot see: a row edited on the slave, then the record's
    horizon of the slave moved past it (as a defect of the tracking would)."""
    slave.psql("UPDATE extensions SET exten = 'edited' WHERE id = (SELECT min(id) FROM extensions)")
    path = os.path.join(master.state_dir, 'replication-tracking.json')
    record = tracking_record(master)
    now = int(slave.psql('SELECT pg_snapshot_xmin(pg_current_snapshot())::text'))
    record['slave_node']['xmin'] = record['slave_node']['next'] = now
    with open(path, 'w') as f:
        json.dump(record, f)
    result = replicate(master, check=False)
    assert 'already up to date' in result.stdout, 'the record was fooled'
    assert table_rows(master, 'extensions') != table_rows(slave, 'extensions')


def test_verify_repairs_what_the_tracking_missed_and_mails_root(ha):
    master, slave = ha
    fool_the_tracking(master, slave)
    result = replicate(master, '--verify')
    assert result.returncode == 0, result.stderr
    assert 'verified by content' in result.stdout
    assert tables_copied(master) == ['extensions']
    log = log_of(master)
    assert 'the replication tracking missed a difference in extensions' in log
    mails = master.mails()
    assert len(mails) == 1 and 'extensions' in mails[0] and 'tracking' in mails[0]
    status = master.wazo('wazo-ha-status')
    assert 'last verification:' in status.stdout and 'missed by tracking: extensions' in status.stdout


def test_the_daily_verification_runs_by_itself_when_due(ha):
    master, slave = ha
    with open(os.path.join(master.state_dir, 'replication-verification.json')) as f:
        first = json.load(f)  # the first run ever is a verification (never verified)
    assert 'userfeatures' in first['differing'] and first['missed_by_tracking'] == []
    fool_the_tracking(master, slave)  # verify_every (a day) has not passed: not verified
    master.write_settings(database={'verify_every': '1'})
    time.sleep(1.1)
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert 'verified by content' in result.stdout and tables_copied(master) == ['extensions']
    assert_slave_consistent(master, slave)
    master.write_settings(database={'verify_every': '0'})
    result = replicate(master)
    assert 'verified' not in result.stdout and 'already up to date' in result.stdout
