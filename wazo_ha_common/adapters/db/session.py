"""PostgreSQL sessions: connecting (as a role, as the node's superuser), the session's settings,
transactions, ending sessions; psycopg2's errors become DatabaseError here (`translated`)."""

from __future__ import annotations

import contextlib
import functools
import os
import pwd

import psycopg2
import psycopg2.extensions
from psycopg2 import sql

from ...errors import WazoHaError
from ..system import printable
from . import ADMIN_OPTIONS


# the text form of every value must be the same on both nodes for fingerprints to compare
OBJECT_IN_USE = '55006'
UNDEFINED_OBJECT = '42704'
SESSION_SETTINGS = ("SET TIME ZONE 'UTC'; SET DateStyle = 'ISO, YMD'; "
                    "SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; "
                    "SET bytea_output = 'hex'; SET client_encoding = 'UTF8'; "
                    "SET statement_timeout = 0; SET lock_timeout = '60s'")


class DatabaseError(WazoHaError):
    """A PostgreSQL connection or statement failed."""


class IntegrityViolation(DatabaseError):
    """A statement broke a constraint (a duplicate key, a dangling reference)."""


class ObjectInUse(DatabaseError):
    """The object is in use (SQLSTATE 55006): e.g. a replication slot a walsender holds."""


class ObjectMissing(DatabaseError):
    """No such object (SQLSTATE 42704): e.g. a replication slot dropped meanwhile."""


def translated(function):
    """psycopg2's errors leave this module as DatabaseError, with the server's first line."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except psycopg2.IntegrityError as e:
            raise IntegrityViolation(first_line(e)) from None
        except psycopg2.Error as e:
            if getattr(e, 'pgcode', None) == OBJECT_IN_USE:
                raise ObjectInUse(first_line(e)) from None
            if getattr(e, 'pgcode', None) == UNDEFINED_OBJECT:
                raise ObjectMissing(first_line(e)) from None
            raise DatabaseError(first_line(e)) from None
    return wrapper


def connect(dsn: str, what: str, application: str = 'wazo-ha', **kwargs):
    try:
        conn = psycopg2.connect(dsn, application_name=application, **kwargs)
        conn.autocommit = False
        with conn.cursor() as cur:
            cur.execute(SESSION_SETTINGS)
        conn.commit()
    except psycopg2.Error as e:
        raise DatabaseError(f'cannot connect to {what}: {first_line(e)}') from None
    return conn


@translated
def cursor(conn):
    return conn.cursor()


@translated
def read_snapshot(conn) -> None:
    """From the next statement on, this connection reads one consistent snapshot."""
    conn.set_session(isolation_level='REPEATABLE READ', readonly=True)


@translated
def commit(conn) -> None:
    conn.commit()


@translated
def rollback(conn) -> None:
    conn.rollback()


def close(conn) -> None:
    """Close, whatever state the connection is in (a broken one: the server rolls back)."""
    with contextlib.suppress(psycopg2.Error):
        conn.close()


# make a peer notice a client that vanished (killed, cut off) within about 30 s, so its open
# transaction is rolled back and its locks released without waiting hours for TCP
SESSION_TIMEOUTS = ('SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; '
                    'SET tcp_keepalives_count = 3; SET tcp_user_timeout = 30000')


@translated
def end_other_sessions(conn, application: str) -> list[int]:
    """Set this session's keepalive timeouts, end every other session of `application`
    (what a killed or cut-off earlier run left), commit. Returns their pids."""
    with conn.cursor() as cur:
        cur.execute(SESSION_TIMEOUTS)
        # only this role's own sessions: a role that is not a superuser may end those alone
        cur.execute('SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity '
                    'WHERE application_name = %s AND usename = current_user '
                    'AND pid <> pg_backend_pid()', (application,))
        pids = [pid for pid, _ in cur.fetchall()]
    conn.commit()
    return pids


def first_line(e: Exception) -> str:
    """The first line of a PostgreSQL error (maybe the peer's words: no control character)."""
    text = str(e).strip() or type(e).__name__
    return printable(' '.join(text.splitlines()[0].split()))


@contextlib.contextmanager
def _effective_user(system_user: str):
    """Connect with the identity of `system_user` (peer authentication reads the effective
    uid of the connecting process); nothing changes when empty or not root."""
    if not system_user or os.geteuid() != 0:
        yield
        return
    try:
        entry = pwd.getpwnam(system_user)
    except KeyError:
        raise DatabaseError(f'no system user {system_user} ([database] admin_system_user)') from None
    uid, gid = os.geteuid(), os.getegid()
    try:
        os.setegid(entry.pw_gid)
        os.seteuid(entry.pw_uid)
        yield
    finally:
        os.seteuid(uid)
        os.setegid(gid)


def admin_connect(dsn: str, system_user: str, application: str):
    """This node's database as its superuser ([database] admin_dsn); search_path is
    ADMIN_SEARCH_PATH from the session's start (libpq options)."""
    with _effective_user(system_user):
        return connect(dsn, "this node's database as its superuser ([database] admin_dsn)",
                       application=application, options=ADMIN_OPTIONS)


@translated
def replica_role(cur) -> None:
    """Until the transaction ends: no trigger fires, foreign keys included."""
    cur.execute('SET LOCAL session_replication_role = replica')


@translated
def execute_together(cur, statements) -> None:
    """Statements sent together: one round trip."""
    if statements:
        cur.execute(sql.SQL('; ').join(statements))


@translated
def set_lock_timeout(cur, timeout: str) -> None:
    cur.execute('SET lock_timeout = %s', (timeout,))


@translated
def end_sessions(cur, application: str, in_transaction: bool = False) -> int:
    """End every session of `application` (as a superuser: any role's), or only those
    inside a transaction; how many."""
    cur.execute('SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity '
                'WHERE application_name = %s AND pid <> pg_backend_pid()'
                + (' AND xact_start IS NOT NULL' if in_transaction else ''), (application,))
    return int(cur.fetchone()[0])


@translated
def end_backend(cur, pid: int) -> None:
    cur.execute('SELECT pg_terminate_backend(%s)', (pid,))


@translated
def set_login(cur, role: str, verifier: str | None) -> None:
    """The role may log in with this SCRAM verifier, or (None) has no password (it keeps
    LOGIN: PostgreSQL 15 starts no apply worker for an owner without it, but password
    authentication fails without a password)."""
    r = sql.Identifier(role)
    if verifier is None:
        cur.execute(sql.SQL('ALTER ROLE {} LOGIN PASSWORD NULL').format(r))
    else:
        cur.execute(sql.SQL('ALTER ROLE {} LOGIN PASSWORD {}').format(r, sql.Literal(verifier)))


@translated
def set_no_login(cur, role: str) -> None:
    cur.execute(sql.SQL('ALTER ROLE {} NOLOGIN PASSWORD NULL').format(sql.Identifier(role)))


@translated
def role_state(cur, query: str, role: str) -> dict:
    """The JSON object a state query (pg_access.ROLE_STATE_SQL) returns for `role`."""
    cur.execute(query.replace(":'role'", '%(role)s'), {'role': role})
    return cur.fetchone()[0]


def connect_as(dsn: str, user: str, password: str, what: str, application: str):
    """This node's database as `user` with a password (libpq's own parameters, not in a
    string that could be logged)."""
    return connect(psycopg2.extensions.make_dsn(dsn, user=user, password=password), what,
                   application=application)
