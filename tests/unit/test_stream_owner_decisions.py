"""The subscription owner's role (stream.owner.owner_steps) and the check of a new
subscription's table list (stream.plan.subscription_refusal)."""

import pytest

from wazo_ha_common.errors import WazoHaError
from wazo_ha_common.stream.owner import owner_steps
from wazo_ha_common.decisions.stream import subscription_refusal

ROLE = 'wazo_ha_subscriber'
ASTERISK = {'name': 'asterisk', 'escalates': False}


def test_a_new_role_is_made_no_superuser_member_of_the_owner_and_allowed_the_replica_role():
    steps = owner_steps({'owners': [ASTERISK], 'role': None}, ROLE, 'asterisk')
    sql = [s.sql for s in steps]
    assert sql == [f'CREATE ROLE "{ROLE}" NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                   'NOREPLICATION NOBYPASSRLS INHERIT',
                   f'GRANT "asterisk" TO "{ROLE}"',
                   f'GRANT SET ON PARAMETER session_replication_role TO "{ROLE}"']


def test_a_role_in_shape_needs_nothing_and_extra_memberships_are_revoked():
    role = {'super': False, 'createrole': False, 'createdb': False, 'replication': False,
            'bypassrls': False, 'inherit': True, 'member_of': ['asterisk'],
            'set_replication_role': True}
    assert owner_steps({'owners': [ASTERISK], 'role': role}, ROLE, 'asterisk') == []
    widened = {**role, 'member_of': ['asterisk', 'pg_write_server_files'], 'replication': True}
    sql = [s.sql for s in owner_steps({'owners': [ASTERISK], 'role': widened}, ROLE, 'asterisk')]
    assert sql == [f'ALTER ROLE "{ROLE}" NOCREATEDB NOREPLICATION NOBYPASSRLS INHERIT',
                   f'REVOKE "pg_write_server_files" FROM "{ROLE}"']


@pytest.mark.parametrize('state, said', [
    ({'owners': [ASTERISK], 'role': {'super': True, 'createrole': False}}, 'is a superuser'),
    ({'owners': [{'name': 'postgres', 'escalates': True}], 'role': None}, 'belong to postgres'),
    ({'owners': [ASTERISK, {'name': 'other', 'escalates': False}], 'role': None},
     'found: asterisk, other'),
])
def test_refused_owners_and_roles(state, said):
    with pytest.raises(WazoHaError, match=said):
        owner_steps(state, ROLE, 'asterisk')


def test_exactly_the_copied_public_tables_is_accepted():
    assert subscription_refusal({('public', 'a'), ('public', 'b')}, {'a', 'b'}) is None


def test_an_excluded_table_a_catalog_or_a_missing_table_is_refused():
    said = subscription_refusal({('public', 'a'), ('public', 'queue_log'),
                                 ('pg_catalog', 'pg_authid')}, {'a', 'b'})
    assert 'it also lists pg_catalog.pg_authid, public.queue_log' in said
    assert 'it lacks b' in said
    assert subscription_refusal({('other', 'a')}, {'a'}).count('other.a') == 1
