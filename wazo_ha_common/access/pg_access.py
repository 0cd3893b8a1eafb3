"""The master's access to the slave's PostgreSQL: a role that is not a superuser, a password
(scram-sha-256) over TLS, from the master's address only; never `trust`.

On a slave, wazo-ha manages:
- a block at the top of pg_hba.conf (first match wins, so it precedes wazo-sysconfd's own
  `host asterisk postgres MASTER/32 trust`, which it makes unreachable);
- conf.d/wazo-ha.conf holding listen_addresses (Debian's postgresql.conf includes conf.d;
  access.pg_files renders it);
- the replication role ([database] remote_user): member of the role owning the replicated
  tables, allowed to SET session_replication_role; no login until paired.
What is applied where, and when, is converge (the command)'s; the files are access.pg_files'; the
pairing protocol (wazo-sync -i) is access.pairing's. This module holds the role's decisions,
the superuser's psql, and the helpers they share.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import stat
from dataclasses import dataclass

from ..errors import CommandError, WazoHaError
from ..settings import Settings
from ..adapters.db import ADMIN_SQL_PREFIX
from ..adapters.network import source_address
# the password file's lines, also as pg_access.pgpass_* (what access.pairing writes)
from ..decisions.pgpass import pgpass_password, pgpass_prefix, with_pgpass_line  # noqa: F401
from ..adapters.system import (Completed, lstat_or_none, make_directory_no_follow, run,
                               write_no_follow)

logger = logging.getLogger('wazo-ha')

BEGIN = '# BEGIN wazo-ha: the master may replicate into this slave (managed by wazo-ha-config)'
END = '# END wazo-ha'
CONF_NAME = 'wazo-ha.conf'

# roles whose members may run programs or touch files as the server: never the tables' owner
# the remote pairing command's exit status when the key was authorised but the role was not
# (see access.pairing)
PAIRING_FAILED = 3
# its exit status when the stream password could not be stored (continuous mode)
STREAM_STORE_FAILED = 4
SCRAM_ITERATIONS = 4096  # PostgreSQL's default scram_iterations


class PairingError(WazoHaError):
    """The replication role's password could not be set or does not work."""


# pg_hba.conf and listen_addresses (pure)

def hba_lines(master_ip: str | None, database: str, user: str,
              local_user: str | None = None) -> list[str]:
    """Our pg_hba.conf lines: the role over TLS with its password from the master only; the
    role from nowhere else nor without TLS; postgres from the master's address refused (so
    that wazo-sysconfd's trust line, appended after ours, is never reached); `local_user` (the
    subscription's owner, see stream.owner) through the local socket with its password only."""
    if not master_ip:
        return []
    net = host_net(master_ip)
    return [f'hostssl {database} {user} {net} scram-sha-256',
            f'host all {user} all reject',
            f'host all postgres {net} reject'] + \
        ([f'local all {local_user} scram-sha-256',
          f'host all {local_user} all reject'] if local_user else [])


def host_net(address: str) -> str:
    """The pg_hba.conf network of this one address."""
    ip = ipaddress.ip_address(address)
    return f'{ip}/{32 if ip.version == 4 else 128}'


def render_hba(text: str, master_ip: str | None, database: str, user: str,
               local_user: str | None = None) -> str:
    """pg_hba.conf with our block replaced (or removed when master_ip is None)."""
    return with_block(text, BEGIN, END, hba_lines(master_ip, database, user, local_user))


def with_block(text: str, begin: str, end: str, rules: list[str]) -> str:
    """pg_hba.conf with the block between the markers `begin` and `end` first in the file,
    holding `rules` (removed when there is none); every other line kept in order."""
    lines = text.splitlines()
    if not rules and begin not in lines:
        return text
    kept, inside = [], False
    for line in lines:
        if line == begin:
            inside = True
            continue
        if inside:
            if line == end:
                inside = False
            continue
        kept.append(line)
    result = ([begin, *rules, end] if rules else []) + kept
    return '\n'.join(result) + '\n' if result else ''


def listen_addresses(settings: Settings, peer_ip: str, peer: str = 'master') -> str:
    """[database] listen_addresses, or this node's address toward the peer and localhost."""
    if settings.database.listen_addresses:
        return settings.database.listen_addresses
    try:
        own = source_address(peer_ip)
    except OSError as e:
        raise WazoHaError(f'no route to the {peer} {peer_ip} ({e}): cannot tell which '
                          'address PostgreSQL should listen on (or set [database] '
                          'listen_addresses)') from None
    return f'{own}, localhost'


# the replication role on the slave (decisions pure, run through psql as the superuser)

@dataclass(frozen=True)
class Step:
    sentence: str
    sql: str


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


ROLE_STATE_SQL = """
SELECT json_build_object(
  'owners', (SELECT coalesce(json_agg(json_build_object(
                'name', o.rolname,
                'escalates', EXISTS (SELECT 1 FROM pg_roles r
                                     WHERE (r.rolsuper OR r.rolcreaterole
                                            OR r.rolname IN ('pg_execute_server_program',
                                                             'pg_read_server_files',
                                                             'pg_write_server_files'))
                                       AND pg_has_role(o.oid, r.oid, 'MEMBER')))
              ORDER BY o.rolname), '[]'::json)
             FROM pg_roles o
             WHERE o.oid IN (SELECT c.relowner FROM pg_class c
                             JOIN pg_namespace n ON n.oid = c.relnamespace
                             WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'S'))),
  'role', (SELECT json_build_object(
              'super', r.rolsuper, 'createrole', r.rolcreaterole, 'createdb', r.rolcreatedb,
              'replication', r.rolreplication, 'bypassrls', r.rolbypassrls,
              'inherit', r.rolinherit, 'login', r.rolcanlogin,
              'member_of', (SELECT coalesce(json_agg(g.rolname ORDER BY g.rolname), '[]'::json)
                            FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                            WHERE m.member = r.oid),
              'set_replication_role', has_parameter_privilege(r.oid, 'session_replication_role', 'SET'),
              'control_system', has_function_privilege(r.oid, 'pg_control_system()', 'EXECUTE'),
              'origin', coalesce(has_table_privilege(r.oid, to_regclass('wazo_ha.origin'),
                                                     'SELECT, INSERT, DELETE'), false),
              'sessions', (SELECT count(*) FROM pg_stat_activity WHERE usesysid = r.oid))
           FROM pg_roles r WHERE r.rolname = :'role'))
"""


# the subscription's owner (stream.owner) may log in or has a password: taken away on a node
# that stops being a slave (a superuser of that name is not ours: left alone)
OWNER_LOGIN_SQL = """
SELECT pg_catalog.json_build_object('login', EXISTS (
  SELECT 1 FROM pg_catalog.pg_authid WHERE rolname = :'role' AND NOT rolsuper
    AND (rolcanlogin OR rolpassword IS NOT NULL)))
"""


def tables_owner(state: dict, database: str, who: str) -> str:
    """The one role that owns the tables of the public schema (from ROLE_STATE_SQL's state);
    refused when there are several, or when it is, or may become, a superuser, create roles
    or run programs on the server (`who`, a member of it, would be as powerful)."""
    owners = state.get('owners') or []
    if len(owners) != 1:
        found = ', '.join(o['name'] for o in owners) or 'none'
        raise WazoHaError(f'the tables of the public schema of database {database} must belong to '
                          f'one role (found: {found}); {who} becomes a member of it')
    if owners[0]['escalates']:
        raise WazoHaError(
            f'the tables of database {database} belong to {owners[0]["name"]}, a superuser or a '
            'role that may become one, create roles or run programs on the server: its members '
            f'({who}) would be as powerful. Give the tables to a role without these rights (on '
            'Wazo: asterisk)')
    return owners[0]['name']


def member_steps(current: dict | None, role: str, owner: str,
                 created: str) -> tuple[list[Step], dict]:
    """What makes `role` a member of the tables' `owner` that may SET session_replication_role
    and holds no other attribute nor membership (the replication role, the subscription's
    owner): the steps, and the role's state as they leave it. `created`: the sentence when
    the role has to be created."""
    r = ident(role)
    steps = []
    if not current:
        steps.append(Step(created, f'CREATE ROLE {r} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                                   'NOREPLICATION NOBYPASSRLS INHERIT'))
        current = {'member_of': [], 'set_replication_role': False}
    elif current['createdb'] or current['replication'] or current['bypassrls'] or \
            not current['inherit']:
        steps.append(Step(f'role {role}: NOCREATEDB NOREPLICATION NOBYPASSRLS INHERIT',
                          f'ALTER ROLE {r} NOCREATEDB NOREPLICATION NOBYPASSRLS INHERIT'))
    for other in current['member_of']:
        if other != owner:
            steps.append(Step(f'role {role}: no longer a member of {other}',
                              f'REVOKE {ident(other)} FROM {r}'))
    if owner not in current['member_of']:
        steps.append(Step(f'role {role}: member of {owner}, the owner of the tables',
                          f'GRANT {ident(owner)} TO {r}'))
    if not current['set_replication_role']:
        steps.append(Step(f'role {role}: may SET session_replication_role',
                          f'GRANT SET ON PARAMETER session_replication_role TO {r}'))
    return steps, current


def role_steps(state: dict, role: str, database: str, slave: bool) -> list[Step]:
    """What to run so that the role is what a slave needs (slave) or gone (not a slave).

    The role may do what the owner of the replicated tables may do (it rewrites them, drops and
    builds their indexes and constraints, restarts their sequences), SET
    session_replication_role (the copy loads rows with triggers and foreign key checks off)
    and read pg_control_system() (which cluster answers: see tracking), and keep the slave's
    record of the master cluster it copies from (origin). Refused: a table owner
    that is, or may become, a superuser or the server's own user, and a role of that name
    that is a superuser or may create roles (not ours: never changed)."""
    current = state.get('role')
    r = ident(role)
    if current and (current['super'] or current['createrole']):
        if not slave:
            return []  # not ours: left alone
        raise WazoHaError(f'the role {role} ([database] remote_user) is a superuser or may create '
                          'roles on this node: the master must not log in as such a role. Choose '
                          'another [database] remote_user (default wazo_ha_replication)')
    if not slave:
        if not current:
            return []
        steps = []
        if current['sessions']:
            steps.append(Step(f'ended the {current["sessions"]} sessions of the role {role}',
                              'SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity '
                              f"WHERE usename = '{role}'"))
        return steps + [Step(f'dropped the replication role {role}',
                             'DROP SCHEMA IF EXISTS wazo_ha CASCADE; '
                             f'REVOKE SET ON PARAMETER session_replication_role FROM {r}; '
                             f'REVOKE EXECUTE ON FUNCTION pg_control_system() FROM {r}; '
                             f'DROP ROLE {r}')]
    owner = tables_owner(state, database, 'the replication role')
    steps, current = member_steps(current, role, owner,
                                  f'created the replication role {role} (no login until '
                                  'wazo-sync -i on the master sets its password)')
    current = {'control_system': False, **current}
    if not current['control_system']:
        steps.append(Step(f'role {role}: may read pg_control_system()',
                          f'GRANT EXECUTE ON FUNCTION pg_control_system() TO {r}'))
    if not current.get('origin'):
        steps.append(Step(f"role {role}: may keep this slave's record of the master cluster it "
                          'copies from (wazo_ha.origin)', origin_setup_sql(r)))
    return steps


def origin_setup_sql(r: str) -> str:
    """The slave's record of the master cluster its data came from (see origin): a table
    outside the public schema (never copied nor compared), the superuser's, that the
    replication role may read and write only."""
    return ('CREATE SCHEMA IF NOT EXISTS wazo_ha; REVOKE ALL ON SCHEMA wazo_ha FROM PUBLIC; '
            'CREATE TABLE IF NOT EXISTS wazo_ha.origin (system_identifier text NOT NULL, '
            'recorded_at timestamptz NOT NULL DEFAULT now(), recorded_by text NOT NULL); '
            f'GRANT USAGE ON SCHEMA wazo_ha TO {r}; '
            f'GRANT SELECT, INSERT, DELETE ON wazo_ha.origin TO {r}')


def admin_psql(settings: Settings, sql: str, **variables) -> Completed:
    """psql as this node's superuser ([database] admin_psql) on the database, SQL on stdin
    after a first statement setting adapters.db.ADMIN_SEARCH_PATH, `variables` as psql variables
    (:'name' in the SQL)."""
    d = settings.database
    argv = [*d.admin_psql, '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1']
    for name, value in variables.items():
        argv += ['-v', f'{name}={value}']
    return run(argv + ['-d', d.name], input=ADMIN_SQL_PREFIX + sql, timeout=120)


def admin_json(settings: Settings, sql: str, **variables) -> dict:
    """The JSON object a state query of admin_psql prints last."""
    out = admin_psql(settings, sql, **variables).stdout.strip()
    try:
        return json.loads(out.splitlines()[-1])
    except (ValueError, IndexError):
        raise WazoHaError(f'unexpected answer of psql ([database] admin_psql): {out[-200:]!r}') from None


def _psql(settings: Settings, sql: str) -> Completed:
    return admin_psql(settings, sql, role=settings.database.remote_user)


def apply_role(settings: Settings, slave: bool) -> list[str]:
    """Create and grant (slave) or drop (not a slave) the replication role; what changed."""
    if not settings.database.admin_psql:
        return []
    state = admin_json(settings, ROLE_STATE_SQL, role=settings.database.remote_user)
    steps = role_steps(state, settings.database.remote_user, settings.database.name, slave)
    if steps:
        _psql(settings, 'BEGIN;\n' + ''.join(s.sql + ';\n' for s in steps) + 'COMMIT;\n')
    return [f'PostgreSQL: {s.sentence}' for s in steps]


def lock_subscription_owner(settings: Settings) -> list[str]:
    """On a node that is no slave: the subscription's owner role (stream.owner) may not log in
    and has no password; what changed."""
    owner = settings.database.subscription_owner
    if not settings.database.admin_psql or \
            not admin_json(settings, OWNER_LOGIN_SQL, role=owner)['login']:
        return []
    admin_psql(settings, f'ALTER ROLE {ident(owner)} NOLOGIN PASSWORD NULL;\n')
    return [f'PostgreSQL: role {owner}: no login, no password (this node is no slave)']


OWNER_DROP_STATE_SQL = """
SELECT pg_catalog.json_build_object(
  'ours', r.oid IS NOT NULL AND NOT r.rolsuper AND NOT r.rolcreaterole,
  'subscriptions', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_subscription s
                    WHERE s.subowner = r.oid))
FROM (SELECT 1) x LEFT JOIN pg_catalog.pg_authid r ON r.rolname = :'role'
"""


def drop_subscription_owner(settings: Settings) -> list[str]:
    """On a node that is no slave, once no subscription is left: the subscription's owner role
    (stream.owner) dropped, not only locked: its sessions ended, what it owns here dropped and
    what it was granted revoked (DROP OWNED: a trigger the old master's stream ran as that role
    may have made or granted something). A role of that name that is a superuser or may
    create roles is not ours: left alone. What changed."""
    owner = settings.database.subscription_owner
    if not settings.database.admin_psql:
        return []
    state = admin_json(settings, OWNER_DROP_STATE_SQL, role=owner)
    if not state.get('ours') or state.get('subscriptions'):
        return []
    r = ident(owner)
    admin_psql(settings, f'ALTER ROLE {r} NOLOGIN PASSWORD NULL;\n'
                         "SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(pid)) FROM "
                         "pg_catalog.pg_stat_activity WHERE usename = :'role';\n", role=owner)
    try:
        admin_psql(settings, f'BEGIN;\nDROP OWNED BY {r};\nDROP ROLE {r};\nCOMMIT;\n')
    except CommandError as e:
        raise WazoHaError(f'the role {owner} could not be dropped (its login is off; retried '
                          f'next minute): {str(e).rsplit(": ", 1)[-1]}') from None
    return [f'PostgreSQL: dropped the role {owner}, owner of the former subscription (this '
            'node is no slave)']


def write_in_conf_dir(path: str, text: str, conf_dir: str, mode: int | None = None,
                      **expect) -> None:
    """A file of PostgreSQL's configuration directory, owned as that directory and written
    without following a link its owner (postgres) could plant; `mode` None: the file's own
    (0640 when new). `expect=TEXT`: see write_no_follow (ChangedMeanwhile)."""
    st = os.lstat(conf_dir)
    if os.path.dirname(path) != conf_dir.rstrip('/'):  # conf.d/, made when missing
        make_directory_no_follow(os.path.dirname(path), 0o755, (st.st_uid, st.st_gid))
    if mode is None:
        current = lstat_or_none(path)
        mode = stat.S_IMODE(current.st_mode) if current is not None and \
            stat.S_ISREG(current.st_mode) else 0o640
    write_no_follow(path, text, mode=mode, owner=(st.st_uid, st.st_gid), **expect)


# pairing (wazo-sync -i on the master)

def scram_verifier(password: str, salt: bytes | None = None,
                   iterations: int = SCRAM_ITERATIONS) -> str:
    """What PostgreSQL stores for a scram-sha-256 password (RFC 5802/7677): enough to check a
    login, not to log in. The password is ASCII (token_urlsafe): SASLprep leaves it as is."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac('sha256', password.encode('utf-8'), salt, iterations)
    stored = hashlib.sha256(hmac.new(salted, b'Client Key', 'sha256').digest()).digest()
    server = hmac.new(salted, b'Server Key', 'sha256').digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode('ascii')
    return f'SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored)}:{b64(server)}'


def slave_dsn(settings: Settings, ip: str) -> str:
    d = settings.database
    return (f"host={ip} port={d.remote_port} dbname={d.name} user={d.remote_user} "
            f"sslmode={d.sslmode} channel_binding=require passfile={d.passfile} "
            f"connect_timeout={d.connect_timeout} keepalives=1 keepalives_idle=10 "
            f"keepalives_interval=5 keepalives_count=3 tcp_user_timeout=30000")


def pairing_sql(role: str, verifier: str) -> str:
    r = ident(role)
    return (ADMIN_SQL_PREFIX +
            "SET log_statement = 'none';\nSET log_min_duration_statement = -1;\n"
            'DO $pair$ BEGIN\n'
            f"  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN\n"
            f"    RAISE EXCEPTION 'role {role} does not exist on this node: is it a slave of this "
            "master (ha.conf)?';\n"
            '  END IF;\n'
            f"  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}' "
            'AND (rolsuper OR rolcreaterole)) THEN\n'
            f"    RAISE EXCEPTION 'role {role} is a superuser or may create roles: refused';\n"
            '  END IF;\n'
            'END $pair$;\n'
            f"ALTER ROLE {r} LOGIN PASSWORD '{verifier}';\n")


def check_pairing(settings: Settings, slave_ip: str) -> str:
    """Log in to the slave as the master's replication does."""
    from ..adapters.db import session
    conn = session.connect(slave_dsn(settings, slave_ip),
                           f'the slave database {settings.database.name} at {slave_ip} as '
                           f'{settings.database.remote_user}')
    try:
        with conn.cursor() as cur:
            cur.execute('SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')
            ssl = cur.fetchone()[0]
    finally:
        conn.close()
    if not ssl:
        raise PairingError('the slave accepted the replication role without TLS')
    return (f'checked: the slave database accepts {settings.database.remote_user} with its '
            'password, over TLS')


def connection_hint(message: str, settings: Settings) -> str:
    """A failed login to the slave, with what the administrator should do next."""
    d = settings.database
    if any(s in message for s in ('password authentication failed', 'no password supplied',
                                  'is not permitted to log in')):
        return (f'{message}: the slave refuses the replication role {d.remote_user} or its '
                f'password ({d.passfile}); pair the nodes: run wazo-sync -i on this master')
    if 'channel binding' in message:
        return (f'{message}: the server at that address did not prove it knows the role\'s '
                'password (it lets the role in without SCRAM): nothing was sent to it; is the '
                'slave really there? its pg_hba.conf must ask scram-sha-256 of that role')
    if 'pg_hba.conf' in message:
        return (f'{message}: is this node allowed there? run wazo-ha-config set --node-type slave '
                'on the slave (its PostgreSQL needs ssl = on)')
    return message
