"""The role that owns the slave's subscription and makes the hand-off's writes ([database]
subscription_owner, wazo_ha_subscriber).

PostgreSQL 15 runs a subscription's apply worker as the subscription's owner, with that role's
rights (checked on the real PostgreSQL 15 by tests/integration/test_attack_stream.py), and a
trigger function runs as whoever writes the row. Were the owner, or the hand-off's session, the
superuser, a trigger put on a copied table by whoever can write the slave's tables (the
master's replication role, a member of the tables' owner) would run as the superuser; a SET
ROLE on a superuser's session does not help (the function can RESET ROLE). So the subscription
belongs to this role, no superuser once created (PostgreSQL 15 takes only a superuser as new
owner: the role is one within the transaction that gives it, never after it commits), member
of the tables' owner and allowed SET session_replication_role, nothing else; and the hand-off
copies on a session of its own, logged in through the local socket with a password made for
that one hand-off (pg_hba.conf block of pg_access: scram-sha-256 through the socket, refused
over the network) and taken away at its end. The role keeps LOGIN: PostgreSQL 15 starts no
apply worker for an owner without it; without a password, no one logs in as it."""

from __future__ import annotations

import secrets

from ..access import pg_access
from ..access.pg_access import Step, ident
from ..adapters.db import session
from ..errors import WazoHaError
from ..settings import Settings


def owner_steps(state: dict, role: str, database: str) -> list[Step]:
    """What to run (as the superuser) so that the role is what the subscription's owner needs
    and no more. Refused: tables with several owners or an owner that is, or may become, a
    superuser, create roles or run programs; a role of that name that is a superuser or may
    create roles (not ours: never changed)."""
    current = state.get('role')
    r = ident(role)
    if current and (current['super'] or current['createrole']):
        raise WazoHaError(f'the role {role} ([database] subscription_owner) is a superuser or may '
                          'create roles on this node: the stream must not be applied with such '
                          'rights. Choose another [database] subscription_owner')
    owners = state.get('owners') or []
    if len(owners) != 1:
        found = ', '.join(o['name'] for o in owners) or 'none'
        raise WazoHaError(f'the tables of the public schema of database {database} must belong to '
                          f'one role (found: {found}); the subscription\'s owner becomes a member '
                          'of it')
    owner = owners[0]
    if owner['escalates']:
        raise WazoHaError(
            f'the tables of database {database} belong to {owner["name"]}, a superuser or a role '
            'that may become one, create roles or run programs on the server: the stream would be '
            'applied with those rights. Give the tables to a role without them (on Wazo: asterisk)')
    steps = []
    if not current:
        steps.append(Step(f'created the role {role}, owner of the subscription',
                          f'CREATE ROLE {r} NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE '
                          'NOREPLICATION NOBYPASSRLS INHERIT'))
        current = {'member_of': [], 'set_replication_role': False}
    elif current['createdb'] or current['replication'] or current['bypassrls'] or \
            not current['inherit']:
        steps.append(Step(f'role {role}: NOCREATEDB NOREPLICATION NOBYPASSRLS INHERIT',
                          f'ALTER ROLE {r} NOCREATEDB NOREPLICATION NOBYPASSRLS INHERIT'))
    for other in current['member_of']:
        if other != owner['name']:
            steps.append(Step(f'role {role}: no longer a member of {other}',
                              f'REVOKE {ident(other)} FROM {r}'))
    if owner['name'] not in current['member_of']:
        steps.append(Step(f'role {role}: member of {owner["name"]}, the owner of the tables',
                          f'GRANT {ident(owner["name"])} TO {r}'))
    if not current['set_replication_role']:
        steps.append(Step(f'role {role}: may SET session_replication_role',
                          f'GRANT SET ON PARAMETER session_replication_role TO {r}'))
    return steps


def prepare(acur, settings: Settings) -> tuple[list[str], str]:
    """On the superuser's cursor, inside its transaction: the role as owner_steps says, with a
    new password until `lock`. Returns what changed and the password."""
    d = settings.database
    state = session.role_state(acur, pg_access.ROLE_STATE_SQL, d.subscription_owner)
    steps = owner_steps(state, d.subscription_owner, d.name)
    for step in steps:
        acur.execute(step.sql)
    password = secrets.token_urlsafe(32)
    acur.execute("SET LOCAL log_statement = 'none'")
    session.set_login(acur, d.subscription_owner, pg_access.scram_verifier(password))
    return [s.sentence for s in steps], password


def lock(acur, settings: Settings) -> None:
    """The role's password is taken away: no one logs in as it until the next hand-off."""
    session.set_login(acur, settings.database.subscription_owner, None)


def connect(settings: Settings, password: str, application: str):
    d = settings.database
    what = (f"this node's database as {d.subscription_owner} ([database] subscription_owner; "
            "its pg_hba.conf line is written by wazo-ha-config set --node-type slave)")
    return session.connect_as(d.admin_dsn, d.subscription_owner, password, what, application)
