"""Which tables changed since the last replication, without reading their content.

A table is unchanged on a node since a snapshot S of an earlier run when it holds the same
number of rows and no row was written by a transaction S could not see (row xmin >= S.xmin).
This is exact: a row visible now whose creator is older than S.xmin was visible in S, so
equal counts mean equal sets of rows. On the slave, rows written by our own last copy (its
transaction id, the "writer") do not count as foreign changes.

Whenever that reasoning could fail (no record, another cluster answering, a cluster restored
from a backup or to a point in time, transaction ids too far apart to compare, different
columns), the record is not valid and the tables are compared by content. A restored cluster
reuses transaction ids below the recorded horizon for the rows written after the restore, and
traffic soon pushes its next id past the horizon: the ids alone cannot tell. Its WAL can: a
point-in-time recovery ends on a new timeline, and a base backup restored as it is resumes
writing WAL behind the position recorded since.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

XID_WINDOW = 1 << 30  # beyond this, 32-bit xid ages cannot be compared safely


@dataclass(frozen=True)
class Horizon:
    """What a node's snapshot tells: the oldest transaction it could not see, the next one,
    and where the cluster's WAL stood (its timeline and insert position)."""
    system: str
    xmin: int   # 64-bit (epoch included)
    next: int
    timeline: int
    lsn: int    # bytes since 0/0


@dataclass
class TableRecord:
    columns: str          # digest of the column list and types
    master_count: int
    slave_count: int
    writer: int | None    # 32-bit xid of our last copy into the slave


@dataclass
class Record:
    slave: str
    database: str
    master: Horizon
    slave_node: Horizon
    tables: dict[str, TableRecord] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def columns_digest(columns) -> str:
    return hashlib.sha256(repr(tuple(columns)).encode()).hexdigest()[:16]


def from_json(text: str | None) -> Record | None:
    if not text:
        return None
    try:
        data = json.loads(text)
        return Record(slave=data['slave'], database=data['database'],
                      master=Horizon(**data['master']), slave_node=Horizon(**data['slave_node']),
                      tables={k: TableRecord(**v) for k, v in data['tables'].items()})
    except (ValueError, KeyError, TypeError):
        return None


def usable(record: Record | None, slave: str, database: str, master_now: Horizon,
           slave_now: Horizon) -> str | None:
    """None if the record can be trusted now, else why not (for the log)."""
    if record is None:
        return 'no record of an earlier replication'
    if (record.slave, record.database) != (slave, database):
        return 'the last replication went to another slave or database'
    for name, before, now in (('master', record.master, master_now),
                              ('slave', record.slave_node, slave_now)):
        if before.system != now.system:
            return f'the {name} database is another PostgreSQL cluster than last time'
        if before.timeline != now.timeline:
            return (f'the {name} cluster is on another WAL timeline than last time (restored to '
                    'a point in time, or promoted?)')
        if now.lsn < before.lsn:
            return (f"the {name} cluster's WAL position is behind the last replication's "
                    '(restored from a backup?)')
        if now.next < before.next:
            return f'transaction ids went backwards on the {name} (restored from a backup?)'
        if now.next - before.xmin >= XID_WINDOW:
            return f'too many transactions on the {name} since the last replication'
    return None


def trusted_tables(record: Record | None, tables) -> dict[str, TableRecord]:
    """The tables whose changes the record can tell by row xmin: those it recorded with the
    same columns. A column added since (a Wazo upgrade) may have given the existing rows a
    value of its own on each node (a volatile DEFAULT such as now() is evaluated once per
    node, without rewriting a row: no xmin moves), so such a table is compared by content."""
    if record is None:
        return {}
    out = {}
    for table in tables:
        rec = record.tables.get(table.name)
        if rec is not None and rec.columns == columns_digest(table.columns):
            out[table.name] = rec
    return out


def xid32(xid8: int) -> int:
    return xid8 % (1 << 32)
