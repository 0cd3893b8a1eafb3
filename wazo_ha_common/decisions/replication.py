"""What the slave's write does, decided from facts alone (no I/O): which tables are copied,
what differs between the two schemas, how the rewritten tables are emptied, which indexes and
constraints a bulk load drops and builds again."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from .schema import ForeignKey, Index

# tables up to this size are compared row by row (by primary key) and only the differing
# rows are rewritten; above it, or past ROW_DIFF_MAX_SHARE of rows differing, the whole table
ROW_DIFF_MAX_ROWS = 100_000
ROW_DIFF_MAX_SHARE = 0.3
# tables rewritten whole with at least this many rows get their indexes rebuilt (write_plan)
REBUILD_INDEXES_FROM_ROWS = 5_000
# ... their constraint indexes too when rows x constraint indexes reach this per foreign key
# that has to be dropped and added back for it (measured here: a foreign key costs about 2 ms
# to drop and add back, a unique index about 0.4 ms per 1,000 rows to maintain, not build)
ROWS_PER_FOREIGN_KEY = 5_000
# a verification is due a little before its period is over, so that a cron start a few
# seconds earlier than the day before does not put it off by an hour
VERIFY_SLACK_SECONDS = 900


def verification_due(last: float | None, now: float, every: int) -> bool:
    """Whether this run compares every copied table by content (`every` 0: never)."""
    if not every:
        return False
    return last is None or now - last >= every - min(VERIFY_SLACK_SECONDS, every / 10)


def is_excluded(table: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(table, p) for p in patterns)


def split_tables(names, patterns) -> tuple[list[str], list[str]]:
    copied = sorted(t for t in names if not is_excluded(t, patterns))
    excluded = sorted(t for t in names if is_excluded(t, patterns))
    return copied, excluded


def schema_differences(master: dict, slave: dict, patterns: tuple[str, ...]) -> list[str]:
    """What differs between the two nodes' copied tables, one sentence each."""
    out = []
    for name in sorted(set(master) | set(slave)):
        if is_excluded(name, patterns):
            continue
        if name not in slave:
            out.append(f'table {name} is missing on the slave')
        elif name not in master:
            out.append(f'table {name} exists on the slave only')
        elif master[name].columns != slave[name].columns:
            m, s = dict(master[name].columns), dict(slave[name].columns)
            for column in sorted(set(m) | set(s)):
                if column not in s:
                    out.append(f'column {name}.{column} is missing on the slave')
                elif column not in m:
                    out.append(f'column {name}.{column} exists on the slave only')
                elif m[column] != s[column]:
                    out.append(f'column {name}.{column} is {m[column]} on the master, '
                               f'{s[column]} on the slave')
    return out


def rewrite_rows_only(master_count: int, slave_count: int, has_key: bool) -> bool:
    """Whether a changed table is worth comparing row by row (else it is rewritten whole)."""
    return has_key and slave_count > 0 and max(master_count, slave_count) <= ROW_DIFF_MAX_ROWS


def few_rows_differ(differing: int, master_count: int, slave_count: int) -> bool:
    return differing <= ROW_DIFF_MAX_SHARE * max(master_count, slave_count)


def truncatable(rewritten: set[str], foreign_keys, empty: set[str] = frozenset()) -> set[str]:
    """Tables that TRUNCATE may empty: every table referencing them is emptied too.

    `foreign_keys`: (referencing, referenced) pairs; a referencing table outside the public
    schema is named schema.table, so it is never emptied and what it references is not
    truncated. The others are emptied with DELETE (with FK triggers off), so that rows of excluded
    tables referencing a copied table (auth_session -> auth_tenant) survive. `empty`: tables
    with no row on either node that may join the TRUNCATE (nothing of theirs is lost) where
    that lets a rewritten table they reference be truncated."""
    result = set(rewritten) | set(empty)
    changed = True
    while changed:
        changed = False
        for src, dst in foreign_keys:
            if dst in result and src not in result:
                result.discard(dst)
                changed = True
    changed = True
    while changed:  # an empty table that references nothing kept is no help: leave it alone
        changed = False
        for extra in sorted(result & set(empty) - set(rewritten)):
            if not any(src == extra and dst in result and dst != extra
                       for src, dst in foreign_keys):
                result.discard(extra)
                changed = True
    return result


@dataclass(frozen=True)
class WritePlan:
    """How the slave's write empties the tables it rewrites whole, and what it drops before
    loading them and builds again after, in the same transaction (nobody else ever sees
    anything missing)."""
    truncate: frozenset[str] = frozenset()      # the others are emptied with DELETE
    indexes: tuple[Index, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    whole_tables: frozenset[str] = frozenset()  # every index of these, constraints included


def heavy_tables(rows: dict[str, int]) -> list[str]:
    """Tables receiving enough rows to be loaded without their indexes."""
    return sorted(t for t, n in rows.items() if n >= REBUILD_INDEXES_FROM_ROWS)


def write_plan(rewritten: set[str], rows: dict[str, int], foreign_keys: list[ForeignKey],
               empty: set[str], indexes: list[Index], constraints: bool = True) -> WritePlan:
    """Indexes are cheaper built once after a load than maintained row by row (measured: a
    build costs about 40% of the maintenance), so tables receiving at least
    REBUILD_INDEXES_FROM_ROWS rows are loaded with their plain indexes dropped.

    `rows`: rows each table receives; `foreign_keys`: every foreign key into the public
    schema; `empty`: copied tables without a row on either node; `indexes`: the indexes of
    the heavy tables. A heavy table also loses its constraint indexes when (a) nothing but
    foreign keys rests on its indexes, (b) every foreign key pointing at it comes from a
    public table truncated in this write (adding it back then checks the master's rows,
    which satisfied it, or no row at all), and (c) that saves more than the foreign keys cost
    to drop and add back: at least ROWS_PER_FOREIGN_KEY rows x constraint indexes per
    foreign key. Empty tables pointing at such a table join its TRUNCATE (nothing of theirs
    is lost). `constraints` False: plain indexes only (the fallback when a constraint cannot
    be built again over the master's rows)."""
    heavy = {t for t in rewritten if rows[t] >= REBUILD_INDEXES_FROM_ROWS}
    inbound = [k for k in foreign_keys if k.references in heavy]
    candidates = set()
    for table in sorted(heavy) if constraints else ():
        own = [i for i in indexes if i.table == table]
        into = [k for k in inbound if k.references == table]
        unique = sum(1 for i in own if i.constraint or i.unique)
        if (all(i.movable for i in own)
                and all(k.movable and k.schema == 'public'
                        and (k.table in rewritten or k.table in empty) for k in into)
                and rows[table] * unique >= ROWS_PER_FOREIGN_KEY * len(into)):
            candidates.add(table)
    extras = {k.table for k in inbound
              if k.references in candidates and k.table in empty and k.table not in rewritten}
    truncate = truncatable(rewritten, [(k.source, k.references) for k in foreign_keys], extras)
    whole = candidates & truncate
    dropped = tuple(i for i in indexes if i.table in whole or (
        i.table in heavy and i.movable and not i.unique and not i.constraint))
    return WritePlan(frozenset(truncate), dropped,
                     tuple(k for k in inbound if k.references in whole), frozenset(whole))


# what a foreign key's ON DELETE (pg_constraint.confdeltype) does to the rows left without
# their parent, as the log says it
ORPHAN_ACTIONS = {'c': 'deleted (ON DELETE CASCADE', 'n': 'set to NULL (ON DELETE SET NULL',
                  'd': 'set to their default (ON DELETE SET DEFAULT', 'a': 'removed (NO ACTION',
                  'r': 'removed (RESTRICT'}


def orphan_action(key: ForeignKey) -> str:
    return ORPHAN_ACTIONS[key.on_delete]


def orphan_keys(foreign_keys: list[ForeignKey], copied: set[str], touched: set[str]
                ) -> list[ForeignKey]:
    """The foreign keys whose rows the write may have left without a parent: from a table it
    does not rewrite (excluded, or outside the public schema) into a table that lost rows
    under session_replication_role = replica (`touched`), where no trigger did what the
    key's ON DELETE says."""
    return [k for k in foreign_keys if k.references in touched
            and not (k.schema == 'public' and k.table in copied)]

