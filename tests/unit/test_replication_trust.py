"""When the tracking record may be trusted, and for which tables."""

from wazo_ha_common.decisions import tracking
from wazo_ha_common.decisions.schema import Table

H = tracking.Horizon


def record():
    return tracking.Record('198.18.0.2', 'asterisk', H('m1', 1000, 1010, 1, 5000),
                          H('s1', 500, 520, 1, 9000), {})


def test_a_table_whose_columns_changed_is_never_judged_by_xmin():
    r = record()
    users = Table('userfeatures', (('id', 'integer'), ('name', 'text')))
    grown = Table('voicemail', (('created_at', 'timestamp with time zone'), ('id', 'integer')))
    r.tables['userfeatures'] = tracking.TableRecord(tracking.columns_digest(users.columns), 1, 1, 7)
    r.tables['voicemail'] = tracking.TableRecord(
        tracking.columns_digest((('id', 'integer'),)), 1, 1, 7)
    trusted = tracking.trusted_tables(r, [users, grown, Table('context', (('id', 'integer'),))])
    assert list(trusted) == ['userfeatures']
    assert tracking.trusted_tables(None, [users]) == {}
