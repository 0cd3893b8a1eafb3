from wazo_ha_common import replication
from wazo_ha_common.decisions import tracking
from wazo_ha_common.decisions.schema import ForeignKey, Index, Table

PATTERNS = ('cel', 'call_logd_*', 'stat_*', 'auth_session')


def test_split_tables_with_patterns():
    copied, excluded = replication.split_tables(
        ['userfeatures', 'cel', 'call_logd_call_log', 'stat_agent', 'stats_conf', 'auth_session'],
        PATTERNS)
    assert copied == ['stats_conf', 'userfeatures']
    assert excluded == ['auth_session', 'call_logd_call_log', 'cel', 'stat_agent']


def test_truncate_only_what_no_kept_table_references():
    fks = [('auth_session', 'auth_tenant'), ('auth_user', 'auth_tenant'),
           ('line_extension', 'extensions'), ('auth_token', 'auth_session')]
    # auth_tenant is referenced by the kept auth_session, extensions by the kept line_extension
    assert replication.truncatable({'auth_tenant', 'auth_user', 'extensions'}, fks) == \
        {'auth_user'}
    # a referencing table emptied too makes TRUNCATE possible
    assert replication.truncatable({'extensions', 'line_extension'}, fks) == \
        {'extensions', 'line_extension'}
    # chains: a -> b -> c with b and c rewritten: b is referenced by the kept a, so b is
    # DELETEd, and TRUNCATE c would then need b in the same TRUNCATE: both DELETEd
    assert replication.truncatable({'b', 'c'}, [('a', 'b'), ('b', 'c')]) == set()


def test_empty_tables_join_the_truncate_only_where_that_helps():
    fks = [('paginguser', 'userfeatures'), ('user_line', 'userfeatures'),
           ('meeting_owner', 'userfeatures'), ('blocklist', 'tenant'), ('auth_session', 'tenant')]
    # the empty paginguser and meeting_owner let userfeatures be truncated
    assert replication.truncatable({'userfeatures', 'user_line'}, fks,
                                   {'paginguser', 'meeting_owner'}) == \
        {'userfeatures', 'user_line', 'paginguser', 'meeting_owner'}
    # without meeting_owner, userfeatures cannot be: paginguser helps nobody and is left alone
    assert replication.truncatable({'userfeatures', 'user_line'}, fks, {'paginguser'}) == \
        {'user_line'}
    # tenant stays DELETEd (the kept auth_session references it): blocklist is not touched
    assert replication.truncatable({'tenant'}, fks, {'blocklist'}) == set()


def index(table, name, constraint=False, unique=False, movable=True):
    return Index(table, name, f'definition of {name}', constraint, unique or constraint, movable)


def fk(table, references, schema='public', movable=True, on_delete='a'):
    return ForeignKey(table, schema, f'{table}_{references}_fkey',
                      f'FOREIGN KEY (x) REFERENCES {references}(id)', references, movable,
                      ('x',), ('id',), on_delete)


USERS = [index('userfeatures', 'userfeatures_pkey', constraint=True),
         index('userfeatures', 'userfeatures_uuid', constraint=True),
         index('userfeatures', 'userfeatures__idx__lastname'),
         index('user_line', 'user_line_pkey', constraint=True)]
INTO_USERS = [fk('user_line', 'userfeatures'), fk('paginguser', 'userfeatures')]


def test_write_plan_rebuilds_every_index_of_a_heavy_table_when_nothing_else_depends_on_them():
    plan = replication.write_plan({'userfeatures', 'user_line'},
                                  {'userfeatures': 20000, 'user_line': 20000}, INTO_USERS,
                                  {'paginguser'}, USERS)
    assert plan.whole_tables == {'userfeatures', 'user_line'}
    assert plan.truncate == {'userfeatures', 'user_line', 'paginguser'}
    assert [i.name for i in plan.indexes] == [i.name for i in USERS]
    assert plan.foreign_keys == tuple(INTO_USERS)


def test_write_plan_keeps_constraints_in_every_doubtful_case():
    rewritten, rows = {'userfeatures', 'user_line'}, {'userfeatures': 20000, 'user_line': 20000}
    plain = ['userfeatures__idx__lastname']
    cases = {
        # paginguser holds rows and is not rewritten: its foreign key could not be checked again
        'referenced by a kept table': dict(empty=set()),
        'a foreign key from another schema': dict(
            empty={'paginguser'}, inbound=[*INTO_USERS, fk('other', 'userfeatures', schema='x')]),
        'a commented foreign key': dict(
            empty={'paginguser'}, inbound=[INTO_USERS[0], fk('paginguser', 'userfeatures',
                                                              movable=False)]),
        'the fallback': dict(empty={'paginguser'}, constraints=False),
    }
    for why, case in cases.items():
        plan = replication.write_plan(rewritten, rows, case.get('inbound', INTO_USERS),
                                      case['empty'], USERS, case.get('constraints', True))
        assert 'userfeatures' not in plan.whole_tables, why
        assert [i.name for i in plan.indexes if i.table == 'userfeatures'] == plain, why
        assert not [k for k in plan.foreign_keys if k.references == 'userfeatures'], why
    # a table referenced from another schema is not truncated either (TRUNCATE would refuse)
    plan = replication.write_plan(rewritten, rows, [*INTO_USERS, fk('other', 'userfeatures', schema='x')],
                                  {'paginguser'}, USERS)
    assert 'userfeatures' not in plan.truncate
    # an index something else rests on (clustered, commented, replica identity): only the
    # other plain indexes go
    odd = [*USERS[:2], index('userfeatures', 'userfeatures__idx__lastname', movable=False),
           USERS[3]]
    plan = replication.write_plan(rewritten, rows, INTO_USERS, {'paginguser'}, odd)
    assert plan.whole_tables == {'user_line'}
    assert [i.name for i in plan.indexes] == ['user_line_pkey']


def test_write_plan_weighs_rows_against_the_foreign_keys_to_rebuild():
    # one constraint index over 20,000 rows does not pay for 5 foreign keys to add back
    inbound = [fk(f'dest_{n}', 'func_key') for n in range(5)]
    indexes = [index('func_key', 'func_key_pkey', constraint=True),
               index('func_key', 'func_key__idx__type_id')]
    empty = {k.table for k in inbound}
    plan = replication.write_plan({'func_key'}, {'func_key': 20000}, inbound, empty, indexes)
    assert plan.whole_tables == set() and plan.foreign_keys == ()
    assert [i.name for i in plan.indexes] == ['func_key__idx__type_id']
    assert plan.truncate == set(), 'empty tables are not truncated when that gains nothing'
    # with 40,000 rows it does
    plan = replication.write_plan({'func_key'}, {'func_key': 40000}, inbound, empty, indexes)
    assert plan.whole_tables == {'func_key'} and len(plan.foreign_keys) == 5
    # small tables keep everything
    plan = replication.write_plan({'func_key'}, {'func_key': 4999}, inbound, empty, indexes)
    assert plan == replication.WritePlan(truncate=frozenset())


def test_schema_differences_list_tables_and_columns():
    m = {'a': Table('a', (('id', 'integer'), ('name', 'text'))), 'b': Table('b', (('id', 'integer'),)),
         'cel': Table('cel', (('id', 'integer'),))}
    s = {'a': Table('a', (('id', 'bigint'), ('extra', 'text'))), 'c': Table('c', ())}
    assert replication.schema_differences(m, s, PATTERNS) == [
        'column a.extra exists on the slave only',
        'column a.id is integer on the master, bigint on the slave',
        'column a.name is missing on the slave',
        'table b is missing on the slave',
        'table c exists on the slave only',
    ]


def test_orphans_are_looked_for_from_the_tables_the_copy_leaves_alone():
    keys = [fk('auth_session', 'auth_tenant'), fk('auth_user', 'auth_tenant'),
            fk('auth_token', 'auth_session'), fk('other', 'auth_tenant', schema='x'),
            fk('stat_switchboard_queue', 'queuefeatures')]
    copied = {'auth_tenant', 'auth_user', 'queuefeatures'}
    found = replication.orphan_keys(keys, copied, {'auth_tenant'})
    assert [(k.source, k.references) for k in found] == [('auth_session', 'auth_tenant'),
                                                         ('x.other', 'auth_tenant')]
    # the next round follows from the excluded tables that lost rows
    assert [k.table for k in replication.orphan_keys(keys, copied, {'auth_session'})] == \
        ['auth_token']
    assert replication.orphan_keys(keys, copied, set()) == []


def test_orphan_actions_follow_on_delete():
    assert replication.orphan_action(fk('a', 'b', on_delete='c')) == 'deleted (ON DELETE CASCADE'
    assert replication.orphan_action(fk('a', 'b', on_delete='n')) == 'set to NULL (ON DELETE SET NULL'
    assert replication.orphan_action(fk('a', 'b', on_delete='d')).startswith('set to their default')
    assert replication.orphan_action(fk('a', 'b', on_delete='a')) == 'removed (NO ACTION'
    assert replication.orphan_action(fk('a', 'b', on_delete='r')) == 'removed (RESTRICT'


H = tracking.Horizon


def record():
    return tracking.Record('198.18.0.2', 'asterisk', H('m1', 1000, 1010, 1, 5000),
                          H('s1', 500, 520, 1, 9000), {})


def test_tracking_record_usable_only_when_nothing_can_fool_it():
    now = (H('m1', 1100, 1110, 1, 6000), H('s1', 600, 610, 1, 9000))
    assert tracking.usable(record(), '198.18.0.2', 'asterisk', *now) is None
    assert 'no record' in tracking.usable(None, '198.18.0.2', 'asterisk', *now)
    assert 'another slave' in tracking.usable(record(), '198.18.0.3', 'asterisk', *now)
    assert 'another PostgreSQL cluster' in tracking.usable(
        record(), '198.18.0.2', 'asterisk', H('m2', 1100, 1110, 1, 6000), now[1])
    assert 'went backwards on the slave' in tracking.usable(
        record(), '198.18.0.2', 'asterisk', now[0], H('s1', 400, 410, 1, 9000))
    assert 'too many transactions' in tracking.usable(
        record(), '198.18.0.2', 'asterisk', H('m1', 1 << 31, 1 << 31, 1, 6000), now[1])


def test_a_restored_cluster_is_not_trusted_whatever_its_transaction_ids():
    """Restored from a base backup or to a point in time: the transaction ids may already be
    past the record, the WAL position or the timeline tell."""
    ahead = dict(xmin=1100, next=1110)
    slave_now = H('s1', 600, 610, 1, 9000)
    assert 'another WAL timeline' in tracking.usable(
        record(), '198.18.0.2', 'asterisk', H('m1', **ahead, timeline=2, lsn=9999), slave_now)
    assert 'WAL position is behind' in tracking.usable(
        record(), '198.18.0.2', 'asterisk', H('m1', **ahead, timeline=1, lsn=4999), slave_now)
    assert 'WAL position is behind' in tracking.usable(
        record(), '198.18.0.2', 'asterisk', H('m1', **ahead, timeline=1, lsn=6000),
        H('s1', 600, 610, 1, 8999))
    assert tracking.usable(record(), '198.18.0.2', 'asterisk',
                           H('m1', **ahead, timeline=1, lsn=5000), slave_now) is None


def test_tracking_record_round_trips_and_corrupt_is_none():
    r = record()
    r.tables['userfeatures'] = tracking.TableRecord('abc', 10, 10, 4242)
    assert tracking.from_json(r.to_json()).master.lsn == 5000
    assert tracking.from_json(r.to_json()) == r
    assert tracking.from_json('{"slave": 1}') is None
    assert tracking.from_json('not json') is None


def test_xid32_wraps():
    assert tracking.xid32((5 << 32) + 7) == 7


def test_verification_is_due_once_per_period_give_or_take_a_cron_start():
    due = replication.verification_due
    assert due(None, 1_000_000, 86400)
    assert not due(1_000_000, 1_000_000 + 3600, 86400)
    # cron starts a few seconds earlier one day than the day before: still due
    assert due(1_000_000, 1_000_000 + 86400 - 30, 86400)
    assert not due(1_000_000, 1_000_000 + 86400 - 3600, 86400)
    assert not due(None, 1_000_000, 0) and not due(1, 1_000_000, 0), '0: never'
    assert due(1_000_000, 1_000_002, 1)
