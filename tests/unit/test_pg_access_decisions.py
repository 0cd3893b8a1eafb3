"""The replication role's grants, its password file and its SCRAM verifier (pure parts)."""

import base64
import hashlib
import hmac

import pytest

from wazo_ha_common.access import pg_access
from wazo_ha_common.errors import WazoHaError

ROLE = 'wazo_ha_replication'
SAFE_OWNER = {'name': 'asterisk', 'escalates': False}
PAIRED = {'super': False, 'createrole': False, 'createdb': False, 'replication': False,
          'bypassrls': False, 'inherit': True, 'login': True, 'member_of': ['asterisk'],
          'set_replication_role': True, 'control_system': True, 'origin': True, 'sessions': 0}


def steps(state, slave=True):
    return [s.sql for s in pg_access.role_steps(state, ROLE, 'asterisk', slave)]


def test_a_new_slave_gets_a_role_without_login_member_of_the_owner_only():
    sql = steps({'owners': [SAFE_OWNER], 'role': None})
    assert sql[0].startswith(f'CREATE ROLE "{ROLE}" NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE')
    assert sql[1:] == [f'GRANT "asterisk" TO "{ROLE}"',
                       f'GRANT SET ON PARAMETER session_replication_role TO "{ROLE}"',
                       f'GRANT EXECUTE ON FUNCTION pg_control_system() TO "{ROLE}"',
                       pg_access.origin_setup_sql(f'"{ROLE}"')]


def test_a_configured_role_is_left_as_it_is_and_extra_rights_are_taken_back():
    assert steps({'owners': [SAFE_OWNER], 'role': PAIRED}) == []
    extra = {**PAIRED, 'member_of': ['asterisk', 'pg_signal_backend'], 'createdb': True}
    assert steps({'owners': [SAFE_OWNER], 'role': extra}) == [
        f'ALTER ROLE "{ROLE}" NOCREATEDB NOREPLICATION NOBYPASSRLS INHERIT',
        f'REVOKE "pg_signal_backend" FROM "{ROLE}"']


@pytest.mark.parametrize('owners, message', [
    ([], 'found: none'),
    ([SAFE_OWNER, {'name': 'postgres', 'escalates': True}], 'found: asterisk, postgres'),
    ([{'name': 'postgres', 'escalates': True}], 'superuser or a role that may become one'),
])
def test_owners_that_would_make_the_role_powerful_are_refused(owners, message):
    with pytest.raises(WazoHaError, match=message):
        steps({'owners': owners, 'role': None})


def test_a_superuser_of_that_name_is_never_used_nor_dropped():
    state = {'owners': [SAFE_OWNER], 'role': {**PAIRED, 'super': True}}
    with pytest.raises(WazoHaError, match='remote_user'):
        steps(state)
    assert steps(state, slave=False) == []


def test_leaving_the_slave_role_ends_the_sessions_and_drops_the_role():
    assert steps({'owners': [SAFE_OWNER], 'role': None}, slave=False) == []
    sql = steps({'owners': [SAFE_OWNER], 'role': {**PAIRED, 'sessions': 2}}, slave=False)
    assert 'pg_terminate_backend' in sql[0] and sql[1].endswith(f'DROP ROLE "{ROLE}"')
    assert sql[1].startswith('DROP SCHEMA IF EXISTS wazo_ha CASCADE')


def test_scram_verifier_matches_rfc7677():
    """RFC 7677's example (password pencil): the server signature it shows is the HMAC of
    the ServerKey our verifier holds."""
    salt = base64.b64decode('W22ZaJ0SNY7soEsUEjb6gQ==')
    verifier = pg_access.scram_verifier('pencil', salt)
    head, keys = verifier.split('$', 1)[1].split('$')
    assert head == '4096:W22ZaJ0SNY7soEsUEjb6gQ=='
    stored, server = (base64.b64decode(k) for k in keys.split(':'))
    nonce = 'rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0'
    auth = (f'n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,'
            f'c=biws,r={nonce}').encode()
    signature = hmac.new(server, auth, hashlib.sha256).digest()
    assert base64.b64encode(signature).decode() == '6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4='
    proof = base64.b64decode('dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=')
    client_key = bytes(a ^ b for a, b in zip(proof, hmac.new(stored, auth, hashlib.sha256).digest()))
    assert hashlib.sha256(client_key).digest() == stored
    assert pg_access.scram_verifier('pencil') != pg_access.scram_verifier('pencil'), 'salted'


def test_password_file_line_is_set_once_escaped_and_other_lines_kept():
    prefix = pg_access.pgpass_prefix('2001:db8::2', 5432, 'asterisk', ROLE)
    assert prefix == f'2001\\:db8\\:\\:2:5432:asterisk:{ROLE}:'
    text = 'localhost:5432:*:admin:secret\n'
    assert pg_access.pgpass_password(text, prefix) is None
    updated = pg_access.with_pgpass_line(text, prefix, 'a:b')
    assert updated == text + prefix + 'a\\:b\n'
    assert pg_access.pgpass_password(updated, prefix) == 'a:b'
    assert pg_access.with_pgpass_line(updated, prefix, 'new').count(prefix) == 1


def test_no_password_reaches_the_slave_only_its_verifier():
    sql = pg_access.pairing_sql(ROLE, pg_access.scram_verifier('the-password'))
    assert 'the-password' not in sql and "PASSWORD 'SCRAM-SHA-256$4096:" in sql
    assert sql.startswith("SET search_path = pg_catalog, pg_temp;\nSET log_statement = 'none'")


@pytest.mark.parametrize('message, hint', [
    ('FATAL:  password authentication failed for user "wazo_ha_replication"', 'wazo-sync -i'),
    ('fe_sendauth: no password supplied', 'wazo-sync -i'),
    ('FATAL:  pg_hba.conf rejects connection for host', 'wazo-ha-config set --node-type slave'),
])
def test_a_refused_login_says_what_to_do(tmp_path, message, hint):
    from wazo_ha_common import settings
    path = tmp_path / 'config.ini'
    path.write_text('')
    assert hint in pg_access.connection_hint(message, settings.load(str(path)))
