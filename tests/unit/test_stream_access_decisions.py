"""The master's side of continuous mode, decided from facts alone: its pg_hba.conf block,
conf.d/wazo-ha.conf, the stream role's steps, the publication plan, and the pairing command
that never carries the stream password."""

import pytest

from wazo_ha_common.access import pg_access, stream_access
from wazo_ha_common.stream import publication
from wazo_ha_common.decisions.schema import PublicationState
from wazo_ha_common.errors import WazoHaError
from wazo_ha_common.stream import SLOT_PREFIX

ROLE = 'wazo_ha_stream'
PLAIN = {'super': False, 'createrole': False, 'createdb': False, 'replication': True,
         'bypassrls': False, 'login': True, 'member_of': [], 'sessions': 0}


def test_hba_block_lets_the_slave_in_over_tls_to_one_database_and_refuses_physical():
    """The block opens the asterisk database to the stream role from the slave's /32 only,
    then refuses that role everywhere else, physical replication (keyword) included."""
    assert stream_access.hba_lines('198.18.0.2', 'asterisk', ROLE) == [
        f'hostssl asterisk {ROLE} 198.18.0.2/32 scram-sha-256',
        f'host all {ROLE} all reject',
        f'host replication {ROLE} all reject']
    assert stream_access.hba_lines('fd00::2', 'asterisk', ROLE)[0].endswith('fd00::2/128 scram-sha-256')
    assert stream_access.hba_lines(None, 'asterisk', ROLE) == []


def test_hba_block_goes_first_is_replaced_and_removed_leaving_other_lines_alone():
    """Our block is first (first match wins), a second render replaces it, removal restores
    the file byte for byte; the slave-side block of pg_access is another block, kept."""
    original = 'local all postgres peer\nhost all all 127.0.0.1/32 scram-sha-256\n'
    opened = stream_access.render_hba(original, '198.18.0.2', 'asterisk', ROLE)
    lines = opened.splitlines()
    assert lines[0] == stream_access.BEGIN and lines[4] == stream_access.END
    assert lines[5:] == original.splitlines()
    moved = stream_access.render_hba(opened, '198.18.0.9', 'asterisk', ROLE)
    assert moved.count(stream_access.BEGIN) == 1 and '198.18.0.9/32' in moved
    assert stream_access.render_hba(moved, None, 'asterisk', ROLE) == original
    assert stream_access.render_hba(original, None, 'asterisk', ROLE) == original
    both = pg_access.render_hba(original, '198.18.0.1', 'asterisk', 'wazo_ha_replication')
    assert stream_access.BEGIN != pg_access.BEGIN and stream_access.END != pg_access.END
    assert stream_access.render_hba(stream_access.render_hba(both, '198.18.0.2', 'asterisk', ROLE),
                                    None, 'asterisk', ROLE) == both


def steps(state, wanted=True):
    return [s.sql for s in stream_access.role_steps(state, ROLE, wanted)]


def test_a_new_master_gets_a_replication_role_without_login_or_other_rights():
    """Created NOLOGIN (pairing gives it a login), REPLICATION and nothing else."""
    assert steps({'role': None, 'slots': []}) == [
        f'CREATE ROLE "{ROLE}" NOLOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE '
        'NOBYPASSRLS NOINHERIT']


def test_a_paired_role_is_left_alone_and_extra_rights_or_memberships_are_taken_back():
    """A second run changes nothing (its login stays); rights and memberships added by hand
    are taken back."""
    assert steps({'role': PLAIN, 'slots': []}) == []
    extra = {**PLAIN, 'createdb': True, 'member_of': ['asterisk']}
    assert steps({'role': extra, 'slots': []}) == [
        f'ALTER ROLE "{ROLE}" REPLICATION NOCREATEDB NOBYPASSRLS',
        f'REVOKE "asterisk" FROM "{ROLE}"']


@pytest.mark.parametrize('right', ['super', 'createrole'])
def test_a_powerful_role_of_that_name_is_refused_and_never_dropped(right):
    """A superuser or createrole role named like the stream role is not ours: refused when
    wanted, not altered nor dropped when closing (our slots still go)."""
    state = {'role': {**PLAIN, right: True}, 'slots': [SLOT_PREFIX + '1']}
    with pytest.raises(WazoHaError, match='superuser or may create roles'):
        steps(state)
    closing = steps(state, wanted=False)
    assert len(closing) == 1 and 'pg_drop_replication_slot' in closing[0]


def test_closing_ends_the_role_s_sessions_drops_the_slots_then_the_role():
    """No login first (no reconnection), sessions ended, slots of our prefix dropped (their
    holder ended), grants taken back and the role dropped; nothing at all when none exists."""
    state = {'role': {**PLAIN, 'sessions': 2}, 'slots': [SLOT_PREFIX + 'a', SLOT_PREFIX + 'b']}
    sql = steps(state, wanted=False)
    assert sql[0] == f'ALTER ROLE "{ROLE}" NOLOGIN'
    assert 'pg_terminate_backend' in sql[1] and f"usename = '{ROLE}'" in sql[1]
    assert f"starts_with(slot_name, '{SLOT_PREFIX}')" in sql[2]
    assert sql[2].index('pg_terminate_backend') < sql[2].index('pg_drop_replication_slot')
    assert sql[3] == f'DROP OWNED BY "{ROLE}"; DROP ROLE "{ROLE}"'
    assert steps({'role': None, 'slots': []}, wanted=False) == []


def state(**kw):
    base = dict(tables=('a', 'b', 'auth_token'), published=('a', 'b'), all_operations=True,
                unusable_identity=(), role_exists=True, granted_tables=('a', 'b'),
                sequences={'a_id_seq': 'a', 'auth_token_id_seq': 'auth_token'},
                granted_sequences=('a_id_seq',), schema_usage=True)
    base.update(kw)
    return PublicationState(**base)


def test_publication_in_step_needs_nothing():
    assert publication.plan(state(), ['a', 'b']).empty()


def test_a_new_publication_holds_the_copied_tables_and_the_role_reads_them_only():
    """Created FOR TABLE exactly the copied tables; SELECT on those and their sequences,
    USAGE on the schema; a grant on an excluded table is taken back."""
    p = publication.plan(state(published=None, granted_tables=('auth_token',),
                               granted_sequences=('auth_token_id_seq',), schema_usage=False),
                         ['a', 'b'])
    assert p.create and p.set_tables == ['a', 'b'] and p.grant_schema
    assert p.grant_tables == ['a', 'b'] and p.revoke_tables == ['auth_token']
    assert p.grant_sequences == ['a_id_seq'] and p.revoke_sequences == ['auth_token_id_seq']


def test_a_changed_table_set_is_set_again_and_operations_restored():
    """A table added by an upgrade is published (SET TABLE), a dropped one no longer; a
    publication that lost an operation publishes all four again."""
    p = publication.plan(state(published=('a', 'gone'), all_operations=False,
                               granted_tables=('a',)), ['a', 'b'])
    assert p.set_tables == ['a', 'b'] and not p.create and p.set_operations
    assert p.grant_tables == ['b']
    assert p.sentences(ROLE, ['b'], ['gone'])[0] == 'publication wazo_ha: added b; removed gone'
    nothing = publication.plan(state(granted_tables=(), granted_sequences=()), [])
    assert nothing.drop_tables == ['a', 'b'] and nothing.set_tables == []


def test_copied_tables_without_replica_identity_get_full_and_excluded_ones_do_not():
    """Only a copied table with no usable identity gets REPLICA IDENTITY FULL, and it is said."""
    p = publication.plan(state(unusable_identity=('b', 'auth_token')), ['a', 'b'])
    assert p.identity_full == ['b']
    assert 'table b: REPLICA IDENTITY FULL' in p.sentences(ROLE)[0]
