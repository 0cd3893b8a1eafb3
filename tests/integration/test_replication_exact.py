"""Replication stays exact where row xmins cannot tell: a column added with a volatile
default, a master restored from a backup, rows of excluded tables left without their parent,
and the daily verification that compares every copied table by content."""

import json
import os
import time

import pytest

from datagen import installation_sql
from replication_helpers import configure, replicate, table_rows, tables_copied
from testbed import PG_BIN, sh


@pytest.fixture
def ha(pair):
    master, slave = pair
    master.psql(installation_sql(users=200, history=200))
    configure(master, slave)
    assert replicate(master).returncode == 0
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
        node.psql('ALTER TABLE userfeatures ADD COLUMN created_at timestamptz DEFAULT now()')
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
