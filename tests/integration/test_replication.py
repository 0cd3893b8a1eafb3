"""xivo-master-slave-db-replication between two real PostgreSQL 15 clusters over TCP."""

import os
import time

import pytest

import baselines
from datagen import installation_sql
from replication_helpers import (configure, public_tables, replicate, snapshot, table_rows,
                                 tables_copied, tables_rows)

EXCLUDED_SAMPLE = ('cel', 'queue_log', 'call_logd_call_log', 'call_logd_tenant', 'stat_agent',
                   'auth_session', 'auth_token')


def configured_with_data(master, slave, _other):
    master.psql(installation_sql(users=300, history=2000))
    configure(master, slave)


@pytest.fixture
def ha(request):
    """Configured and paired, 300 users on the master, nothing replicated yet. Shared: reset
    to this baseline before each test."""
    master, slave, _ = baselines.shaped(request, baselines.PG, 'replication', configured_with_data)
    return master, slave


def replicated_once(master, slave, other):
    configured_with_data(master, slave, other)
    assert replicate(master).returncode == 0


@pytest.fixture
def replicated(request):
    """As `ha`, then replicated once (that first, full copy returned 0): for the tests of the
    runs after it. Shared: reset to this baseline before each test (both clusters, the
    tracking record and every state file with them)."""
    master, slave, _ = baselines.shaped(request, baselines.PG, 'replicated', replicated_once)
    return master, slave


def copied_tables(node):
    return [t for t in public_tables(node)
            if not t.startswith(('call_logd_', 'stat_', 'auth_token', 'auth_session',
                                 'auth_saml_session', 'auth_refresh_token', 'auth_saml_pysaml2'))
            and t not in ('cel', 'queue_log', 'dhcp', 'session', 'mail', 'monitoring',
                          'netiface', 'resolvconf', 'provisioning', 'call_log',
                          'call_log_participant')]


def assert_copied_equal(master, slave):
    tables = copied_tables(master)
    on_master, on_slave = tables_rows(master, tables), tables_rows(slave, tables)
    for table in tables:
        assert on_master[table] == on_slave[table], table


def sequences(node):
    return node.psql("SELECT string_agg(sequencename || '=' || coalesce(last_value, 0)::text, ' ' "
                     "ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'public' "
                     "AND sequencename NOT LIKE 'call_logd%' AND sequencename NOT LIKE 'stat%' "
                     "AND sequencename NOT IN ('cel_id_seq', 'queue_log_id_seq')")


def next_values(node, seqs):
    return [node.psql(f"SELECT nextval('{s}')") for s in seqs]


def test_first_replication_copies_every_row_and_sequence(ha):
    master, slave = ha
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert 'tables copied' in result.stdout
    assert_copied_equal(master, slave)
    seqs = ['userfeatures_id_seq', 'linefeatures_id_seq', 'extensions_id_seq', 'func_key_id_seq']
    assert next_values(master, seqs) == next_values(slave, seqs)


def test_slave_keeps_its_own_call_logs_cel_queue_logs_and_sessions(ha):
    master, slave = ha
    slave.psql(installation_sql(users=0, history=800, groups=0))
    slave.psql("INSERT INTO stat_queue (name, tenant_uuid) VALUES ('q-slave', 'x')")
    before = {t: table_rows(slave, t) for t in EXCLUDED_SAMPLE}
    assert before['cel'] != table_rows(master, 'cel')
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    for table, rows in before.items():
        assert table_rows(slave, table) == rows, f'{table} of the slave was touched'


def test_an_excluded_table_referencing_a_copied_one_neither_blocks_nor_loses_rows(ha):
    master, slave = ha
    tenant = '00000000-0000-4000-8000-0000000000b1'
    for node in (master, slave):
        node.psql(f"INSERT INTO auth_tenant (uuid, name, slug, parent_uuid, "
                  f"default_authentication_method) VALUES ('{tenant}', 't', 'tb', '{tenant}', 'native')")
    slave.psql(f"INSERT INTO auth_session (uuid, tenant_uuid, mobile) VALUES "
               f"('00000000-0000-4000-8000-0000000000c1', '{tenant}', false)")
    master.psql("UPDATE auth_tenant SET name = 'renamed'")
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert slave.psql('SELECT count(*) FROM auth_session') == '1', 'no TRUNCATE ... CASCADE'
    assert slave.psql(f"SELECT name FROM auth_tenant WHERE uuid = '{tenant}'") == 'renamed'


def test_unchanged_database_rewrites_nothing(replicated):
    master, slave = replicated
    slave_stats = slave.psql("SELECT sum(n_tup_ins + n_tup_del) FROM pg_stat_user_tables")
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert 'already up to date' in result.stdout
    time.sleep(0.6)  # statistics are flushed to the collector every 500 ms
    assert slave.psql("SELECT sum(n_tup_ins + n_tup_del) FROM pg_stat_user_tables") == slave_stats


@pytest.mark.parametrize('change, expected_tables', [
    ("UPDATE userfeatures SET firstname = 'Zed' WHERE id = (SELECT min(id) FROM userfeatures)",
     ['userfeatures']),
    # composite primary key, rows deleted, updated and added in one table
    ("DELETE FROM queuemember WHERE userid % 11 = 0; "
     "UPDATE queuemember SET penalty = 3 WHERE userid % 13 = 0; "
     "INSERT INTO queuemember (queue_name, interface, usertype, userid, channel, category, position) "
     "SELECT 'grp-new', interface, usertype, userid, channel, category, 1 FROM queuemember "
     "WHERE userid % 17 = 0",
     ['queuemember']),
    # most rows changed: the whole table is rewritten
    ("UPDATE linefeatures SET description = 'all changed'", ['linefeatures']),
    ("UPDATE voicemail SET password = NULL WHERE uniqueid = (SELECT max(uniqueid) FROM voicemail)",
     ['voicemail']),
    ("DELETE FROM queuemember WHERE userid % 7 = 0", ['queuemember']),
    ("INSERT INTO context (tenant_uuid, name, displayname, contexttype) "
     "SELECT tenant_uuid, 'ctx2', 'C2', 'internal' FROM context LIMIT 1; "
     "INSERT INTO groupfeatures (tenant_uuid, name, label) SELECT tenant_uuid, 'gx', 'GX' FROM context LIMIT 1; "
     "UPDATE extensions SET exten = exten || '0' WHERE id % 50 = 0",
     ['context', 'extensions', 'groupfeatures']),
    # rewritten rows count as changed even with the same values: copying is harmless,
    # skipping never happens without proof
    ("UPDATE userfeatures SET firstname = firstname || '' ", ['userfeatures']),
])
def test_incremental_copies_exactly_the_changed_tables(replicated, change, expected_tables):
    master, slave = replicated
    master.psql(change)
    result = replicate(master, '-v')
    assert result.returncode == 0, result.stderr
    assert tables_copied(master) == expected_tables
    assert_copied_equal(master, slave)


def test_without_a_tracking_record_tables_are_compared_by_content(replicated):
    master, slave = replicated
    master.psql("UPDATE userfeatures SET firstname = firstname || ''")
    slave.psql("UPDATE voicemail SET fullname = 'edited on the slave' WHERE uniqueid = "
               "(SELECT min(uniqueid) FROM voicemail)")
    os.unlink(os.path.join(master.state_dir, 'replication-tracking.json'))
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert tables_copied(master) == ['voicemail']
    assert_copied_equal(master, slave)


def test_a_change_made_on_the_slave_is_overwritten(replicated):
    master, slave = replicated
    slave.psql("DELETE FROM extensions WHERE id = (SELECT min(id) FROM extensions);"
               "INSERT INTO context (tenant_uuid, name, displayname, contexttype) "
               "SELECT tenant_uuid, 'slave-ctx', 'S', 'internal' FROM context LIMIT 1")
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    # line_extension too: the slave's DELETE cascaded into it
    assert tables_copied(master) == ['context', 'extensions', 'line_extension']
    assert_copied_equal(master, slave)


def test_a_slave_restored_from_an_older_copy_is_noticed(replicated):
    master, slave = replicated
    master.psql("UPDATE userfeatures SET lastname = 'v2'")
    assert replicate(master).returncode == 0
    # another cluster answers at the slave's address (rebuilt, restored): same counts,
    # older content, transaction ids of its own
    os.unlink(os.path.join(master.state_dir, 'replication-tracking.json'))
    slave.psql("UPDATE userfeatures SET lastname = 'v1'")
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert_copied_equal(master, slave)


def test_a_changed_sequence_alone_is_replicated(replicated):
    master, slave = replicated
    master.psql("SELECT nextval('userfeatures_id_seq'); SELECT nextval('userfeatures_id_seq')")
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert '1 sequences set' in result.stdout
    assert sequences(master) == sequences(slave)


def test_wrong_role_changes_nothing(ha):
    master, slave = ha
    before = snapshot(slave)
    result = replicate(slave)
    assert result.returncode == 0, result.stderr
    assert 'not a master' in result.stdout and 'nothing done' in result.stdout
    assert result.stderr == ''
    assert snapshot(slave) == before
    assert slave.mails() == []


@pytest.mark.parametrize('argument, code, message', [
    ('slave.example.org', 2, 'not an IP address'),
    ('198.18.0.2;reboot', 2, 'not an IP address'),
    ('198.18.0.1', 2, 'address of this node'),
    ('198.18.0.9', 2, 'is not the slave configured'),
])
def test_bad_arguments_are_refused_and_change_nothing(ha, argument, code, message):
    master, slave = ha
    before = snapshot(slave)
    result = replicate(master, argument)
    assert result.returncode == code
    assert message in result.stderr
    assert snapshot(slave) == before


def test_a_second_run_leaves_while_the_first_holds_the_lock(ha):
    master, slave = ha
    with master.lock_held('xivo-master-slave-db-replication'):
        before = snapshot(slave)
        result = replicate(master)
        assert result.returncode == 1
        assert 'another xivo-master-slave-db-replication is running' in result.stderr
        assert snapshot(slave) == before


def test_different_alembic_version_is_refused_and_mailed(ha):
    master, slave = ha
    slave.psql("UPDATE alembic_version SET version_num = 'aaaaaaaaaaaa'")
    before = snapshot(slave)
    result = replicate(master)
    assert result.returncode == 1
    assert 'same Wazo version' in result.stderr and 'aaaaaaaaaaaa' in result.stderr
    assert snapshot(slave) == before
    mails = master.mails()
    assert len(mails) == 1 and 'Slave replication failed' in mails[0]


def test_slave_lacking_a_table_is_refused_with_the_differences(ha):
    master, slave = ha
    slave.psql('DROP TABLE switchboard_member_user; ALTER TABLE voicemail DROP COLUMN tz')
    before = snapshot(slave)
    result = replicate(master)
    assert result.returncode == 1
    assert 'table switchboard_member_user is missing on the slave' in result.stderr
    assert 'column voicemail.tz is missing on the slave' in result.stderr
    assert snapshot(slave) == before


def test_unreachable_slave_is_a_clear_failure(ha):
    master, slave = ha
    slave.link(up=False)
    result = replicate(master, timeout=120)
    assert result.returncode == 1
    assert 'cannot connect to the slave database' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert 'Slave replication failed' in master.mails()[0]


def test_missing_ha_conf_is_an_error(pair):
    master, _ = pair
    result = replicate(master)
    assert result.returncode == 2
    assert 'ha.conf does not exist' in result.stderr


def test_encoding_mismatch_is_explained_not_a_traceback(pair):
    master, slave = pair
    for node, encoding in ((master, 'UTF8'), (slave, 'LATIN1')):
        node.psql(f"CREATE DATABASE enc OWNER asterisk TEMPLATE template0 ENCODING '{encoding}' "
                  "LC_COLLATE 'C' LC_CTYPE 'C'", db='postgres')
        node.psql("SET ROLE asterisk; CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY);"
                  "INSERT INTO alembic_version VALUES ('1e0ff683a94e');"
                  "CREATE TABLE t (id int PRIMARY KEY, name text)", db='enc')
        node.write_settings(database={'name': 'enc',
                                      'local_dsn': node.local_dsn.replace('dbname=asterisk', 'dbname=enc')})
    master.psql("INSERT INTO t VALUES (1, 'Zoë')", db='enc')
    configure(master, slave)
    result = replicate(master)
    assert result.returncode == 1
    assert "encoded in UTF8" in result.stderr and 'in LATIN1' in result.stderr
    assert 'Traceback' not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert slave.psql('SELECT count(*) FROM t', db='enc') == '0'
