"""What differs between the two nodes: the schemas (refused when they differ), which copied
tables and sequences changed, and which rows of a changed table."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ..adapters.db import catalog
from ..decisions import schema, tracking
from ..errors import WazoHaError
from .nodes import Nodes
from ..decisions.replication import schema_differences, split_tables

logger = logging.getLogger('wazo-ha')


class SchemaMismatch(WazoHaError):
    """The two nodes do not run the same Wazo schema: replication would corrupt the slave."""


def copied_tables(nodes: Nodes, patterns: tuple[str, ...]) -> tuple[list[schema.Table], list[str]]:
    """The tables to copy and the names of the excluded ones, once both nodes are known to
    run the same schema with the same encoding (else SchemaMismatch)."""
    _check_compatible(nodes)
    master_tables, slave_tables = nodes.both(catalog.tables)
    differences = schema_differences(master_tables, slave_tables, patterns)
    if differences:
        raise SchemaMismatch(
            'the slave does not have the same database schema as the master: '
            + '; '.join(differences[:10])
            + (f' (and {len(differences) - 10} more)' if len(differences) > 10 else '')
            + '. Both nodes must run the same Wazo version: upgrade the slave, then '
            'the master, then replicate again. The slave is unchanged.')
    copied, excluded = split_tables(master_tables, patterns)
    return [master_tables[t] for t in copied], excluded


def _check_compatible(nodes: Nodes) -> None:
    m, s = nodes.both(catalog.database_encoding)
    if m['encoding'] != s['encoding']:
        raise SchemaMismatch(
            f"the master's database is encoded in {m['encoding']} (locale {m['ctype']}) and "
            f"the slave's in {s['encoding']} (locale {s['ctype']}): text cannot be copied "
            'faithfully. Recreate the slave\'s PostgreSQL cluster with the master\'s locale '
            '(see "Troubleshooting: locale" in the README). The slave is unchanged.')
    if (m['collate'], m['ctype']) != (s['collate'], s['ctype']):
        logger.warning('the master (%s) and the slave (%s) databases use different locales; '
                       'sorting may differ between them', m['collate'], s['collate'])
    mv, sv = nodes.both(catalog.alembic_version)
    if mv != sv:
        raise SchemaMismatch(
            f'the master runs Wazo schema version {mv} and the slave {sv}: both nodes must '
            'run the same Wazo version (upgrade the slave, then the master, then replicate '
            'again). The slave is unchanged.')


@dataclass
class Changes:
    """What the comparison found: row counts (master, slave) of every copied table, the
    tables to rewrite, the sequences to set (name -> the master's state), and the tables
    whose rows may be compared by xmin (see tracking.trusted_tables)."""
    counts: dict[str, tuple[int, int]]
    tables: list[schema.Table]
    sequences: dict[str, tuple[int, bool]]
    trusted: dict[str, tracking.TableRecord]
    missed: list[str]     # a verification's find: differing tables the record said unchanged

    def __bool__(self) -> bool:
        return bool(self.tables or self.sequences)


def find_changes(nodes: Nodes, tables: list[schema.Table], record: tracking.Record | None,
                 verify: bool = False) -> Changes:
    """Row counts on both nodes and the tables to rewrite.

    Tables the record can be trusted for are judged by counts and row xmins (no content
    read); the others by counts, then by a digest of their content when the counts are
    equal. `verify`: every table is judged by content whatever the record says; the tables
    the record would have missed are noted, and rows are then compared by content too."""
    trusted = tracking.trusted_tables(record, tables)
    tracked = [(t, trusted[t.name]) for t in tables if t.name in trusted]
    untracked = [t for t in tables if t.name not in trusted]
    m_since = tracking.xid32(record.master.xmin) if record else None
    s_since = tracking.xid32(record.slave_node.xmin) if record else None
    m_checks = [(t.name, m_since, None) for t, _ in tracked] + [(t.name, None, None) for t in untracked]
    s_checks = [(t.name, s_since, rec.writer) for t, rec in tracked] + \
               [(t.name, None, None) for t in untracked]
    m, s = nodes.both(catalog.change_counts, master_args=(m_checks,), slave_args=(s_checks,))
    counts = {name: (m[name][0], s[name][0]) for name in m}
    changed = set()
    for t, rec in tracked:
        (mc, mn), (sc, sn) = m[t.name], s[t.name]
        if mn or sn or mc != rec.master_count or sc != rec.slave_count:
            changed.add(t.name)
    said_changed = set(changed)
    if verify:
        changed, untracked = set(), tables
    same_count = []
    for t in untracked:
        if m[t.name][0] != s[t.name][0]:
            changed.add(t.name)
        elif m[t.name][0]:
            same_count.append(t)
    if same_count:
        on_master, on_slave = nodes.both(_fingerprints, same_count)
        for t, a, b in zip(same_count, on_master, on_slave):
            if a != b:
                changed.add(t.name)
    missed = sorted(changed - said_changed) if verify else []
    return Changes(counts, [t for t in tables if t.name in changed],
                   _changed_sequences(nodes, {t.name for t in tables}),
                   {} if verify else trusted, [n for n in missed if n in trusted])


def _fingerprints(cur, tables: list[schema.Table]) -> list[tuple]:
    return [catalog.fingerprint(cur, t) for t in tables]


def _changed_sequences(nodes: Nodes, copied: set[str], forward_only: bool = False
                       ) -> dict[str, tuple[int, bool]]:
    """Sequences of copied tables whose state differs: name -> the master's state.
    `forward_only`: only those the master has moved past the slave's (never back)."""
    owned, slave_owned = nodes.both(catalog.owned_sequences)
    names = sorted(seq for seq, table in owned.items() if table in copied and seq in slave_owned)
    m, s = nodes.both(catalog.sequence_states, names)
    if forward_only:
        return {n: m[n] for n in names if (m[n][0], m[n][1]) > (s[n][0], s[n][1])}
    return {n: m[n] for n in names if m[n] != s[n]}


def sequences_forward(nodes: Nodes, copied: set[str]) -> dict[str, tuple[int, bool]]:
    """Continuous mode: the sequences of copied tables the master has moved past the slave's."""
    return _changed_sequences(nodes, copied, forward_only=True)


def differing_rows(nodes: Nodes, table: schema.Table, key: tuple[str, ...],
                   record: tracking.Record | None, rec: tracking.TableRecord | None
                   ) -> tuple[list, list]:
    """Keys of the slave rows to delete and of the master rows to copy.

    With `rec`, the table's entry in a trusted record, only rows written since the last run
    on either node (and keys present on one node only) differ: no content is read. Without,
    rows are compared by a 128-bit hash of their content."""
    if rec is not None:
        (m_keys, m_new), (s_keys, s_new) = nodes.both(
            catalog.keys_since, master_args=(table, key, tracking.xid32(record.master.xmin), None),
            slave_args=(table, key, tracking.xid32(record.slave_node.xmin), rec.writer))
        stale = (s_keys - m_keys) | s_new | (m_new & s_keys)
        fresh = (m_keys - s_keys) | m_new | (s_new & m_keys)
        return sorted(stale), sorted(fresh)
    m, s = nodes.both(catalog.row_hashes, table, key)
    return ([k for k, h in s.items() if m.get(k) != h],
            [k for k, h in m.items() if s.get(k) != h])

