"""The master's publication in continuous mode: PUBLICATION holds exactly the copied tables
(the public schema minus [database] excluded_tables), publishing inserts, updates, deletes and
truncates; the stream role may read them (and the sequences they own), nothing else.

keep_in_step(settings) brings it in step; wazo-ha-config set calls it on a continuous
master, and so should the master's hourly replication run (a Wazo upgrade adds or drops
tables). It works through [database] local_dsn: on Wazo the tables' owner (asterisk).

A table whose changes a publication cannot identify (REPLICA IDENTITY DEFAULT without a
primary key, or NOTHING) would make PostgreSQL refuse every UPDATE and DELETE on the master
once published: such a copied table gets REPLICA IDENTITY FULL first (the whole old row
identifies it), said in the log and in what keep_in_step returns. On the Wazo schema of
tests/fixtures (152 tables in schema public) every table has a primary key: none gets
REPLICA IDENTITY FULL (FIXTURE_FULL, checked by the integration tests); a table added
without one by a later Wazo version, or by hand, would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from ..adapters.db import publishing, session
from ..decisions import schema
from ..decisions.replication import split_tables
from ..settings import Settings
from . import PUBLICATION

logger = logging.getLogger('wazo-ha')

FIXTURE_FULL: tuple[str, ...] = ()


class PublicationError(session.DatabaseError):
    """The publication cannot be kept in step."""


@dataclass
class Plan:
    create: bool = False
    set_tables: list[str] = field(default_factory=list)  # the publication's new table list
    drop_tables: list[str] = field(default_factory=list)  # only when nothing is copied
    set_operations: bool = False
    identity_full: list[str] = field(default_factory=list)
    grant_tables: list[str] = field(default_factory=list)
    revoke_tables: list[str] = field(default_factory=list)
    grant_sequences: list[str] = field(default_factory=list)
    revoke_sequences: list[str] = field(default_factory=list)
    grant_schema: bool = False

    def empty(self) -> bool:
        return self == Plan()

    def sentences(self, role: str, added=(), removed=()) -> list[str]:
        out = []
        for table in self.identity_full:
            out.append(f'table {table}: REPLICA IDENTITY FULL (no primary key: without it '
                       'the master would refuse its UPDATE and DELETE once published)')
        if self.create:
            out.append(f'created the publication {PUBLICATION} of {len(self.set_tables)} '
                       'copied tables')
        elif added or removed:
            out.append(f'publication {PUBLICATION}: ' + '; '.join(
                part for part in (f'added {", ".join(added)}' if added else '',
                                  f'removed {", ".join(removed)}' if removed else '') if part))
        if self.set_operations:
            out.append(f'publication {PUBLICATION}: publishes inserts, updates, deletes and '
                       'truncates')
        if self.grant_schema:
            out.append(f'role {role}: USAGE on schema public')
        if self.grant_tables or self.grant_sequences:
            out.append(f'role {role}: may read {len(self.grant_tables)} tables and '
                       f'{len(self.grant_sequences)} sequences more')
        if self.revoke_tables or self.revoke_sequences:
            out.append(f'role {role}: may no longer read ' +
                       ', '.join(self.revoke_tables + self.revoke_sequences))
        return out


def plan(state: schema.PublicationState, copied: list[str]) -> Plan:
    """What to change so that the publication holds exactly `copied` and the role may read
    those tables and their sequences and nothing else of the schema."""
    wanted = sorted(copied)
    result = Plan()
    result.identity_full = sorted(set(state.unusable_identity) & set(wanted))
    if state.published is None:
        result.create = True
        result.set_tables = wanted
    else:
        if sorted(state.published) != wanted:
            if wanted:
                result.set_tables = wanted
            else:
                result.drop_tables = sorted(state.published)
        result.set_operations = not state.all_operations
    result.grant_schema = not state.schema_usage
    result.grant_tables = sorted(set(wanted) - set(state.granted_tables))
    result.revoke_tables = sorted(set(state.granted_tables) - set(wanted))
    sequences = {s for s, table in state.sequences.items() if table in set(wanted)}
    result.grant_sequences = sorted(sequences - set(state.granted_sequences))
    result.revoke_sequences = sorted(set(state.granted_sequences) - sequences)
    return result


def _state(settings: Settings):
    """A session on this node's database, a cursor, and the publication's state read."""
    conn = session.connect(settings.database.local_dsn,
                           'the master database ([database] local_dsn)',
                           application='wazo-ha-publication')
    try:
        cur = session.cursor(conn)
        state = publishing.publication_state(cur, PUBLICATION, settings.database.stream_user)
        return conn, cur, state
    except BaseException:
        session.close(conn)
        raise


def keep_in_step(settings: Settings) -> list[str]:
    """Bring the publication, the replica identities and the stream role's grants in step with
    the copied tables; returns what changed, one sentence each (empty: nothing)."""
    d = settings.database
    conn, cur, state = _state(settings)
    try:
        if not state.role_exists:
            raise PublicationError(f'the stream role {d.stream_user} does not exist: run '
                                   'wazo-ha-config set --node-type master --remote-address '
                                   'SLAVE on this master (with [database] mode = continuous)')
        copied, _ = split_tables(state.tables, d.excluded_tables)
        steps = plan(state, copied)
        if steps.empty():
            session.rollback(conn)
            return []
        publishing.keep_publication(cur, PUBLICATION, d.stream_user, **vars(steps))
        session.commit(conn)
    finally:
        session.close(conn)
    for table in steps.identity_full:
        logger.warning('table %s has no primary key: REPLICA IDENTITY FULL set so that its '
                       'UPDATE and DELETE are published (and not refused)', table)
    published = set(state.published or ())
    added = sorted(set(steps.set_tables) - published) if not steps.create else []
    removed = sorted(published - set(copied)) if state.published is not None else []
    return [f'PostgreSQL: {s}' for s in steps.sentences(d.stream_user, added, removed)]


def drop(settings: Settings) -> list[str]:
    """Drop the publication and take back the stream role's grants (the removal path)."""
    d = settings.database
    conn, cur, state = _state(settings)
    try:
        role = d.stream_user if state.role_exists else None
        existed = publishing.drop_publication(cur, PUBLICATION, role)
        session.commit(conn)
    finally:
        session.close(conn)
    return [f'PostgreSQL: dropped the publication {PUBLICATION}'] if existed else []
