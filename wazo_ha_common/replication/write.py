"""The slave's write: in one transaction, the changed tables rewritten (only their differing
rows where few differ, else whole through a streamed COPY), the sequences set, commit."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from ..adapters.db import catalog, session, table_copy
from ..decisions import schema, tracking
from .compare import Changes, differing_rows
from .nodes import Nodes
from ..decisions.replication import (WritePlan, few_rows_differ, heavy_tables, orphan_action,
                                     orphan_keys, rewrite_rows_only, write_plan)

logger = logging.getLogger('wazo-ha')


class ConstraintRebuildFailed(session.DatabaseError):
    """The master's rows break a constraint the slave built again after a bulk load."""


@dataclass(kw_only=True)
class Copy:
    """The figures of one copy of the master's tables into the slave: a replication run's
    (job.Result adds its own) or a hand-off's (stream/handoff)."""
    tables_copied: list[str] = field(default_factory=list)
    tables_unchanged: int = 0
    tables_excluded: list[str] = field(default_factory=list)
    sequences_set: int = 0
    rows: int = 0
    slave_write_seconds: float = 0.0
    orphans: int = 0          # rows of tables not copied that lost their parent in the write
    duration: float = 0.0


class Writer:
    """One write of `changes` into the slave; `result` gets its figures."""

    def __init__(self, nodes: Nodes, changes: Changes, record: tracking.Record | None,
                 result: Copy):
        self.nodes, self.changes, self.record, self.result = nodes, changes, record, result

    def write(self) -> int:
        """Write and commit; the transaction's xid (rows it wrote carry it as xmin). Should the
        master hold rows its own constraints never checked (loaded with triggers off), the
        write is rolled back and done again with the constraints kept in place."""
        foreign_keys = catalog.foreign_keys(self.nodes.scur)
        try:
            return self._write(foreign_keys, constraints=True)
        except ConstraintRebuildFailed as e:
            logger.warning('%s; writing again with the constraints kept', e)
            self.nodes.rollback_slave()
            return self._write(foreign_keys, constraints=False)

    def _write(self, foreign_keys: list[schema.ForeignKey], constraints: bool) -> int:
        scur, counts, result = self.nodes.scur, self.changes.counts, self.result
        write_started = time.monotonic()
        result.rows, result.tables_copied = 0, []  # counted again if this write is done again
        session.replica_role(scur)
        writer = catalog.current_xid32(scur)
        keys = catalog.primary_keys(scur)
        whole = [t for t in self.changes.tables if not self._rewrite_rows(t, keys.get(t.name))]
        names = {t.name for t in whole}
        rows = {n: counts[n][0] for n in names}
        heavy = heavy_tables(rows)
        plan = write_plan(names, rows, foreign_keys, {n for n, c in counts.items() if c == (0, 0)},
                          catalog.indexes(scur, heavy) if heavy else [], constraints)
        catalog.empty_tables(scur, plan.truncate, names - plan.truncate)
        load_started = time.monotonic()
        copy_seconds, rebuild_seconds = self._load(whole, plan)
        result.orphans = self._clear_orphans(foreign_keys)
        sequences_started = time.monotonic()
        for seq, state in self.changes.sequences.items():
            catalog.restart_sequence(scur, seq, state)
        result.sequences_set = len(self.changes.sequences)
        commit_started = time.monotonic()
        self.nodes.commit_slave()
        logger.info('slave write phases: compare and empty %.2f s, copy %.2f s, %d indexes and %d '
                    'foreign keys rebuilt in %.2f s, sequences %.2f s, commit %.2f s',
                    load_started - write_started, copy_seconds, len(plan.indexes),
                    len(plan.foreign_keys), rebuild_seconds, commit_started - sequences_started,
                    time.monotonic() - commit_started)
        result.slave_write_seconds = time.monotonic() - write_started
        return writer

    def _clear_orphans(self, foreign_keys: list[schema.ForeignKey]) -> int:
        """Rows of the tables the copy leaves alone that lost their parent in this write (no
        trigger fired: session_replication_role = replica) get what their foreign key's
        ON DELETE says, in the same transaction, round after round (auth_token -> auth_session
        -> auth_tenant). Returns how many rows; the log names them."""
        copied, touched = set(self.changes.counts), set(self.result.tables_copied)
        said, total = [], 0
        while touched:
            lost = set()
            for key in orphan_keys(foreign_keys, copied, touched):
                count = catalog.clear_orphans(self.nodes.scur, key)
                if count:
                    total += count
                    lost.add(key.table)
                    said.append(f'{key.source}: {count} row{"s" if count > 1 else ""} '
                                f'{orphan_action(key)} of {key.name})')
            touched = lost
        if said:
            logger.info('rows of the slave left without their parent: %s', ', '.join(said))
        return total

    def _rewrite_rows(self, table: schema.Table, key: tuple[str, ...] | None) -> bool:
        """Rewrite only the rows that differ; False when the whole table should be rewritten."""
        master_count, slave_count = self.changes.counts[table.name]
        if not rewrite_rows_only(master_count, slave_count, bool(key)):
            return False
        stale, fresh = differing_rows(self.nodes, table, key, self.record,
                                      self.changes.trusted.get(table.name))
        if not few_rows_differ(len(stale) + len(fresh), master_count, slave_count):
            return False
        catalog.delete_rows(self.nodes.scur, table, key, stale)
        written = 0
        for i in range(0, len(fresh), 1000):
            where = catalog.key_filter(table, key, fresh[i:i + 1000])
            written += table_copy.stream_table(self.nodes.master, self.nodes.slave, table,
                                               where=where)
        if written != len(fresh) or slave_count - len(stale) + written != master_count:
            raise session.DatabaseError(f'{table.name}: {written} of {len(fresh)} rows written, '
                                        'the counts do not add up; nothing was kept on the slave')
        self.result.rows += written
        self.result.tables_copied.append(table.name)
        return True

    def _load(self, whole: list[schema.Table], plan: WritePlan) -> tuple[float, float]:
        """Copy the emptied tables whole, without what the plan drops, and build that again:
        each table's indexes right after its load (the master reads the next tables meanwhile),
        the foreign keys at the end. Returns the seconds spent copying and rebuilding."""
        scur, counts = self.nodes.scur, self.changes.counts
        session.execute_together(scur, [catalog.drop(fk) for fk in plan.foreign_keys]
                                 + [catalog.drop(index) for index in plan.indexes])
        copy_seconds = rebuild_seconds = 0.0
        try:
            with table_copy.TableStream(self.nodes.master, [(t, None) for t in whole]) as stream:
                for table in whole:
                    started = time.monotonic()
                    rows = stream.copy_next(self.nodes.slave, table)
                    # what was written must be what the master's snapshot holds, or nothing is kept
                    if rows != counts[table.name][0]:
                        raise session.DatabaseError(f'{rows} rows of {table.name} written, the '
                                                    f'master has {counts[table.name][0]}; nothing '
                                                    'was kept on the slave')
                    self.result.rows += rows
                    self.result.tables_copied.append(table.name)
                    loaded = time.monotonic()
                    session.execute_together(scur, [catalog.create(i) for i in plan.indexes
                                                    if i.table == table.name])
                    copy_seconds += loaded - started
                    rebuild_seconds += time.monotonic() - loaded
            started = time.monotonic()
            session.execute_together(scur, [catalog.create(fk) for fk in plan.foreign_keys])
            rebuild_seconds += time.monotonic() - started
        except session.IntegrityViolation as e:
            if not plan.whole_tables:
                raise
            raise ConstraintRebuildFailed(
                f'rebuilding the constraints of {", ".join(sorted(plan.whole_tables))} after the '
                f'load failed: {e}') from None
        return copy_seconds, rebuild_seconds
