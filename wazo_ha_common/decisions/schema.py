"""The typed records of a database's catalog, as the adapters read them and the decisions
use them: tables, indexes, foreign keys, the state of the publication. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[tuple[str, str], ...]  # (column, type) in name order

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c for c, _ in self.columns)


@dataclass(frozen=True)
class Index:
    """One index of a table, as the slave's write can drop and rebuild it."""
    table: str
    name: str                 # quoted: ready for DROP INDEX / DROP CONSTRAINT
    definition: str           # CREATE INDEX ..., or the constraint's definition
    constraint: bool          # backs a PRIMARY KEY or UNIQUE constraint of the table
    unique: bool
    movable: bool             # nothing but foreign keys rests on it: no comment, not
                              # clustered, not the replica identity, no exclusion constraint


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key constraint pointing at a table of the public schema."""
    table: str                # the referencing table
    schema: str
    name: str                 # quoted
    definition: str
    references: str           # the referenced table (public schema)
    movable: bool             # no comment: dropping and adding it again loses nothing
    columns: tuple[str, ...] = ()        # referencing columns, in key order
    ref_columns: tuple[str, ...] = ()    # the referenced columns they match
    on_delete: str = 'a'      # pg_constraint.confdeltype: a, r, c, n (set null), d (default)
    set_columns: tuple[str, ...] = ()    # ON DELETE SET NULL/DEFAULT (columns): only these

    @property
    def source(self) -> str:
        """The referencing table, qualified when outside the public schema."""
        return self.table if self.schema == 'public' else f'{self.schema}.{self.table}'


@dataclass(frozen=True)
class PublicationState:
    tables: tuple[str, ...]            # ordinary and partitioned tables of the public schema
    published: tuple[str, ...] | None  # its tables (schema.table outside public); None: none
    all_operations: bool               # publishes insert, update, delete and truncate
    unusable_identity: tuple[str, ...]  # tables whose UPDATE/DELETE a publication would refuse
    role_exists: bool
    granted_tables: tuple[str, ...]    # public tables the role holds SELECT on (granted to it)
    sequences: dict                    # owned sequence -> its table
    granted_sequences: tuple[str, ...]
    schema_usage: bool                 # the role holds USAGE on schema public (granted to it)
