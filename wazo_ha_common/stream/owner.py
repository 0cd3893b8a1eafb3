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

import os
import secrets
from dataclasses import dataclass, field

from ..access import pg_access
from ..access.pg_access import Step
from ..adapters.db import logical, session
from ..adapters.system import read_no_follow
from ..errors import WazoHaError
from ..settings import Settings


def owner_steps(state: dict, role: str, database: str) -> list[Step]:
    """What to run (as the superuser) so that the role is what the subscription's owner needs
    and no more. Refused: tables with several owners or an owner that is, or may become, a
    superuser, create roles or run programs; a role of that name that is a superuser or may
    create roles (not ours: never changed)."""
    current = state.get('role')
    if current and (current['super'] or current['createrole']):
        raise WazoHaError(f'the role {role} ([database] subscription_owner) is a superuser or may '
                          'create roles on this node: the stream must not be applied with such '
                          'rights. Choose another [database] subscription_owner')
    owner = pg_access.tables_owner(state, database, "the subscription's owner")
    steps, _ = pg_access.member_steps(current, role, owner,
                                      f'created the role {role}, owner of the subscription')
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


def lock(acur, settings: Settings, login: bool = True) -> None:
    """The role's password is taken away: no one logs in as it until the next hand-off;
    without `login` (no subscription any more) it loses LOGIN too."""
    if login:
        session.set_login(acur, settings.database.subscription_owner, None)
    elif logical.role_login(acur, settings.database.subscription_owner) is not None:
        session.set_no_login(acur, settings.database.subscription_owner)


def connect(settings: Settings, password: str, application: str):
    d = settings.database
    what = (f"this node's database as {d.subscription_owner} ([database] subscription_owner; "
            "its pg_hba.conf line is written by wazo-ha-config set --node-type slave)")
    return session.connect_as(d.admin_dsn, d.subscription_owner, password, what, application)


@dataclass
class Kept:
    """What a run outside a hand-off found and mended (keep)."""
    changes: list[str] = field(default_factory=list)
    tampered: list[str] = field(default_factory=list)  # mailed to root: someone changed it
    restart: bool = False       # the apply worker must start again (a new owner)


def keep(acur, settings: Settings, name: str, conninfo: str) -> Kept:
    """On the superuser's cursor, inside its transaction, at each run outside a hand-off: the
    subscription `name` belongs to the owner role (one made by an older version, or given
    away, is given to it: that role needs LOGIN for its apply worker, never a password), the
    role has no password (a trigger run by the apply worker may set one: ALTER ROLE
    current_user PASSWORD, which the local scram line would then admit), and the subscription
    connects with `conninfo` (its owner may change it)."""
    d = settings.database
    role = d.subscription_owner
    kept = Kept()
    setup = logical.subscription_setup(acur, name)
    if setup is None:
        return kept
    current_owner, current_conninfo = setup
    login = logical.role_login(acur, role)
    if current_owner != role:
        state = session.role_state(acur, pg_access.ROLE_STATE_SQL, role)
        steps = owner_steps(state, role, d.name)
        for step in steps:
            acur.execute(step.sql)
        kept.changes += [s.sentence for s in steps]
        session.set_login(acur, role, None)
        logical.give_subscription(acur, name, role)
        kept.changes.append(f'the subscription {name} belonged to {current_owner}: given to '
                            f'{role}, its apply worker started again')
        kept.restart = True
    elif login is not None and login[1]:
        session.set_login(acur, role, None)
        kept.tampered.append(f'the role {role} had a password outside a hand-off (a trigger run '
                             'by the apply worker can set one): taken away')
    elif login is not None and not login[0]:
        session.set_login(acur, role, None)
        kept.changes.append(f'role {role}: LOGIN again (its apply worker needs it), no password')
    if current_conninfo != conninfo:
        logical.set_subscription_connection(acur, name, conninfo)
        kept.tampered.append(f'the connection of the subscription {name} was not the one '
                             'wazo-ha sets (its owner can change it): set back')
    return kept


def hba_missing(settings: Settings) -> str | None:
    """The pg_hba.conf line the role needs at the next hand-off (local socket, its password),
    when this node's pg_hba.conf lacks it: what to say."""
    role = settings.database.subscription_owner
    path = os.path.join(settings.paths.postgresql_conf_dir, 'pg_hba.conf')
    line = f'local all {role} scram-sha-256'
    text = read_no_follow(path) or ''
    if line in text.splitlines():
        return None
    return (f'{path} has no line "{line}" for the subscription\'s owner (an older version wrote '
            'none): the next hand-off could not log in as it. Run wazo-ha-config set '
            '--node-type slave --remote-address MASTER on this node')
