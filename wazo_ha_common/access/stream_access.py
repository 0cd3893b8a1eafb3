"""The slave's access to the master's PostgreSQL in continuous mode ([database] mode =
continuous): the slave subscribes to the master's publication through a logical replication
connection as the stream role ([database] stream_user).

On a continuous master, wazo-ha manages (the converge command applies it, access.pg_files writes
the files, access.pairing gives the slave the role's password):
- a block at the top of pg_hba.conf (first match wins): the stream role over TLS with its
  password (scram-sha-256) from the slave's address, into the replicated database only; the
  role from anywhere else, into any other database or for physical replication (the
  `replication` keyword) refused;
- conf.d/wazo-ha.conf: wal_level = logical, max_slot_wal_keep_size and listen_addresses
  (access.pg_files renders it; a restart makes them take effect);
- the stream role: REPLICATION, no superuser, no createdb/createrole/bypassrls, member of no
  role, no login until `wazo-sync -i` pairs (see publication for its SELECT grants).
Anything else (hourly mode, a slave, a disabled node) takes all that away again: the
publication, every replication slot named SLOT_PREFIX*, the role, the block, the file.

What the role can do that PostgreSQL 15 does not let us forbid: a REPLICATION role that may
open a logical replication connection (`replication=database`) may create its own logical
slots and decode every change of that database (the excluded tables too), and in that same
connection run the physical replication commands (START_REPLICATION PHYSICAL, BASE_BACKUP:
a copy of every file of the cluster). The role's password exists only on the master (as a
SCRAM verifier) and in the slave's root-only password file; only the slave's address may use
it, over TLS.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass

from . import pg_access
from ..errors import WazoHaError
from .pg_access import Step, ident
from ..settings import Settings
from ..decisions.stream import SLOT_PREFIX
from ..adapters.system import Completed, read_text, write_atomic

logger = logging.getLogger('wazo-ha')

BEGIN = '# BEGIN wazo-ha: the slave may stream this master\'s changes (managed by wazo-ha-config)'
END = '# END wazo-ha stream'
PASSWORD_FILE = 'stream-password'  # in [paths] state_dir, 0600


def continuous_slave(settings: Settings, node_type: str, remote_address: str) -> str | None:
    """The slave's address when this node is a master in continuous mode, else None."""
    if node_type == 'master' and settings.continuous and remote_address:
        return remote_address
    return None


# pg_hba.conf and conf.d/wazo-ha.conf (pure)

def hba_lines(slave_ip: str | None, database: str, user: str) -> list[str]:
    """The stream role over TLS with its password from the slave only, into `database` only
    (a logical replication connection names the database, so it matches this line); from
    anywhere else, into any other database, or as a physical replication connection (the
    `replication` keyword, which `all` does not cover): refused."""
    if not slave_ip:
        return []
    net = pg_access.host_net(slave_ip)
    return [f'hostssl {database} {user} {net} scram-sha-256',
            f'host all {user} all reject',
            f'host replication {user} all reject']


def render_hba(text: str, slave_ip: str | None, database: str, user: str) -> str:
    """pg_hba.conf with our block first (or without it when slave_ip is None); every other
    line, the slave-side block of pg_access included, kept in order."""
    return pg_access.with_block(text, BEGIN, END, hba_lines(slave_ip, database, user))


# the stream role (decisions pure, run through psql as the superuser)

STATE_SQL = """
SELECT json_build_object(
  'role', (SELECT json_build_object(
              'super', r.rolsuper, 'createrole', r.rolcreaterole, 'createdb', r.rolcreatedb,
              'replication', r.rolreplication, 'bypassrls', r.rolbypassrls,
              'login', r.rolcanlogin,
              'member_of', (SELECT coalesce(json_agg(g.rolname ORDER BY g.rolname), '[]'::json)
                            FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid
                            WHERE m.member = r.oid),
              'sessions', (SELECT count(*) FROM pg_stat_activity WHERE usesysid = r.oid))
           FROM pg_roles r WHERE r.rolname = :'role'),
  'slots', (SELECT coalesce(json_agg(s.slot_name ORDER BY s.slot_name), '[]'::json)
            FROM pg_replication_slots s
            WHERE starts_with(s.slot_name, :'prefix')
              AND (s.database IS NULL OR s.database = current_database())))
"""

# ends whatever holds a slot (waiting up to 10 s for it to exit), then drops it
DROP_SLOTS_SQL = """DO $drop$ DECLARE s record; BEGIN
  FOR s IN SELECT slot_name, active_pid FROM pg_replication_slots
           WHERE starts_with(slot_name, {prefix})
             AND (database IS NULL OR database = current_database()) LOOP
    IF s.active_pid IS NOT NULL THEN
      PERFORM pg_terminate_backend(s.active_pid, 10000);
    END IF;
    PERFORM pg_drop_replication_slot(s.slot_name);
  END LOOP;
END $drop$"""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def role_steps(state: dict, role: str, wanted: bool) -> list[Step]:
    """What to run so that the stream role exists as a continuous master needs it (wanted) or
    is gone, with the slots of our prefix (not wanted).

    The role: REPLICATION (a logical replication connection needs it), no other attribute,
    member of no role, created without login (wazo-sync -i gives it one with its password).
    A role of that name that is a superuser or may create roles is not ours: refused when
    wanted, left alone otherwise (its slots are still dropped)."""
    current = state.get('role')
    r = ident(role)
    foreign = bool(current and (current['super'] or current['createrole']))
    if foreign and wanted:
        raise WazoHaError(f'the role {role} ([database] stream_user) is a superuser or may '
                          'create roles on this node: the slave must not log in as such a role. '
                          'Choose another [database] stream_user (default wazo_ha_stream)')
    if not wanted:
        steps = []
        if current and not foreign:
            steps.append(Step(f'role {role}: no login', f'ALTER ROLE {r} NOLOGIN'))
            if current['sessions']:
                steps.append(Step(f'ended the {current["sessions"]} sessions of the role {role}',
                                  'SELECT count(pg_terminate_backend(pid, 10000)) FROM '
                                  f'pg_stat_activity WHERE usename = {_literal(role)}'))
        if state.get('slots'):
            steps.append(Step('dropped the replication slots ' + ', '.join(state['slots']),
                              DROP_SLOTS_SQL.format(prefix=_literal(SLOT_PREFIX))))
        if current and not foreign:
            # DROP OWNED BY takes back every grant it holds in this database (it owns nothing)
            steps.append(Step(f'dropped the stream role {role}',
                              f'DROP OWNED BY {r}; DROP ROLE {r}'))
        return steps
    if not current:
        return [Step(f'created the stream role {role} (REPLICATION; no login until wazo-sync -i '
                     'sets its password)',
                     f'CREATE ROLE {r} NOLOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE '
                     'NOBYPASSRLS NOINHERIT')]
    steps = []
    if current['createdb'] or current['bypassrls'] or not current['replication']:
        steps.append(Step(f'role {role}: REPLICATION NOCREATEDB NOBYPASSRLS',
                          f'ALTER ROLE {r} REPLICATION NOCREATEDB NOBYPASSRLS'))
    for other in current['member_of']:
        steps.append(Step(f'role {role}: no longer a member of {other}',
                          f'REVOKE {ident(other)} FROM {r}'))
    return steps


def _psql(settings: Settings, sql: str) -> Completed:
    return pg_access.admin_psql(settings, sql, role=settings.database.stream_user,
                                prefix=SLOT_PREFIX)


def role_state(settings: Settings) -> dict:
    return pg_access.admin_json(settings, STATE_SQL, role=settings.database.stream_user,
                                prefix=SLOT_PREFIX)


def apply_role(settings: Settings, wanted: bool) -> list[str]:
    steps = role_steps(role_state(settings), settings.database.stream_user, wanted)
    if not steps:
        return []
    if wanted:
        _psql(settings, 'BEGIN;\n' + ''.join(s.sql + ';\n' for s in steps) + 'COMMIT;\n')
    else:  # each on its own: a slot is dropped outside the transaction that ended its holder
        _psql(settings, ''.join(s.sql + ';\n' for s in steps))
    return [f'PostgreSQL: {s.sentence}' for s in steps]


# pairing (wazo-sync -i on a continuous master)

def password_path(settings: Settings) -> str:
    return os.path.join(settings.paths.state_dir, PASSWORD_FILE)


def stream_password(settings: Settings) -> tuple[str, bool]:
    """The stream role's password and whether it was kept: the one in the state directory's
    0600 file, or a new one written there first."""
    path = password_path(settings)
    password = (read_text(path) or '').strip()
    if password:
        os.chmod(path, 0o600)
        return password, True
    password = secrets.token_urlsafe(32)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomic(path, password + '\n', mode=0o600)
    return password, False


def set_local_verifier(settings: Settings, password: str) -> None:
    """The role may log in, with this password (only its SCRAM verifier is sent, on stdin,
    with statement logging off)."""
    role = settings.database.stream_user
    sql = ("SET log_statement = 'none';\nSET log_min_duration_statement = -1;\n"
           f'ALTER ROLE {ident(role)} LOGIN PASSWORD '
           f'{_literal(pg_access.scram_verifier(password))};\n')
    if not settings.database.admin_psql:
        raise WazoHaError('continuous mode needs [database] admin_psql on the master')
    if not role_state(settings).get('role'):
        raise WazoHaError(f'the stream role {role} does not exist on this master: configure it '
                          'as the master of this slave (PUT /ha on wazo-confd, or wazo-ha-config '
                          'set --node-type master --remote-address SLAVE) with [database] mode = '
                          'continuous, then run wazo-sync -i again')
    _psql(settings, sql)


@dataclass(frozen=True)
class StreamPairing:
    kept: bool
    password: str = ''

    def __repr__(self) -> str:  # never the password in a traceback or a log
        return f'StreamPairing(kept={self.kept})'

    @property
    def input(self) -> str:
        return self.password + '\n'


def prepare_pairing(settings: Settings) -> StreamPairing | None:
    """On a continuous master: the password (kept or new), its verifier set here. None in
    hourly mode."""
    if not settings.continuous:
        return None
    password, kept = stream_password(settings)
    set_local_verifier(settings, password)
    return StreamPairing(kept, password)


def pairing_sentence(settings: Settings, pairing: StreamPairing) -> str:
    d = settings.database
    return ((f'kept the password of the stream role {d.stream_user} ({password_path(settings)}) '
             if pairing.kept else
             f'made a password for the stream role {d.stream_user}, kept in '
             f'{password_path(settings)} (0600); ') +
            "set here as a SCRAM verifier and stored in the slave's [database] passfile")
