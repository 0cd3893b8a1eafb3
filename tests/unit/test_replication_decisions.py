from wazo_ha_common import replication, tracking
from wazo_ha_common.db import Table

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


H = tracking.Horizon


def record():
    return tracking.Record('198.18.0.2', 'asterisk', H('m1', 1000, 1010), H('s1', 500, 520), {})


def test_tracking_record_usable_only_when_nothing_can_fool_it():
    now = (H('m1', 1100, 1110), H('s1', 600, 610))
    assert tracking.usable(record(), '198.18.0.2', 'asterisk', *now) is None
    assert 'no record' in tracking.usable(None, '198.18.0.2', 'asterisk', *now)
    assert 'another slave' in tracking.usable(record(), '198.18.0.3', 'asterisk', *now)
    assert 'another PostgreSQL cluster' in tracking.usable(
        record(), '198.18.0.2', 'asterisk', H('m2', 1100, 1110), now[1])
    assert 'went backwards on the slave' in tracking.usable(
        record(), '198.18.0.2', 'asterisk', now[0], H('s1', 400, 410))
    assert 'too many transactions' in tracking.usable(
        record(), '198.18.0.2', 'asterisk', H('m1', 1 << 31, 1 << 31), now[1])


def test_tracking_record_round_trips_and_corrupt_is_none():
    r = record()
    r.tables['userfeatures'] = tracking.TableRecord('abc', 10, 10, 4242)
    assert tracking.from_json(r.to_json()) == r
    assert tracking.from_json('{"slave": 1}') is None
    assert tracking.from_json('not json') is None


def test_xid32_wraps():
    assert tracking.xid32((5 << 32) + 7) == 7
