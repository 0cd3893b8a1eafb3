"""The master's publication of continuous mode (planned in stream/publication): its state,
the statements of a plan, dropping it, its tables."""

from __future__ import annotations

from psycopg2 import sql

from ...decisions.schema import PublicationState
from .catalog import owned_sequences
from .session import translated


_GRANTED = """EXISTS (SELECT 1 FROM aclexplode({acl}) a
                       WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = %(role)s)
                         AND a.privilege_type = {privilege})"""


@translated
def publication_state(cur, publication: str, role: str) -> PublicationState:
    """What keep_in_step needs to know, read in one transaction."""
    args = {'role': role, 'publication': publication}
    cur.execute("""
        SELECT c.relname,
               -- no usable replica identity: DEFAULT without a primary key, NOTHING, or an
               -- index identity whose index is gone
               NOT (c.relreplident = 'f'
                    OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i
                                                          WHERE i.indrelid = c.oid
                                                            AND i.indisprimary))
                    OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i
                                                          WHERE i.indrelid = c.oid
                                                            AND i.indisreplident))),
               """ + _GRANTED.format(acl='c.relacl', privilege="'SELECT'") + """
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
        ORDER BY c.relname""", args)
    rows = cur.fetchall()
    cur.execute("""
        SELECT p.pubinsert AND p.pubupdate AND p.pubdelete AND p.pubtruncate,
               (SELECT coalesce(array_agg(CASE WHEN t.schemaname = 'public' THEN t.tablename
                                          ELSE t.schemaname || '.' || t.tablename END
                                          ORDER BY 1), '{}')
                FROM pg_publication_tables t WHERE t.pubname = p.pubname)
        FROM pg_publication p WHERE p.pubname = %(publication)s""", args)
    publication_row = cur.fetchone()
    cur.execute("""
        SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = %(role)s),
               """ + _GRANTED.format(acl='n.nspacl', privilege="'USAGE'") + """
        FROM pg_namespace n WHERE n.nspname = 'public'""", args)
    role_exists, usage = cur.fetchone()
    cur.execute("""
        SELECT s.relname, """ + _GRANTED.format(acl='s.relacl', privilege="'SELECT'") + """
        FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace
        WHERE s.relkind = 'S' AND n.nspname = 'public'""", args)
    granted_sequences = tuple(sorted(name for name, granted in cur.fetchall() if granted))
    return PublicationState(
        tables=tuple(name for name, _, _ in rows),
        published=tuple(publication_row[1]) if publication_row else None,
        all_operations=bool(publication_row and publication_row[0]),
        unusable_identity=tuple(name for name, unusable, _ in rows if unusable),
        role_exists=bool(role_exists),
        granted_tables=tuple(name for name, _, granted in rows if granted),
        sequences=owned_sequences(cur),
        granted_sequences=granted_sequences,
        schema_usage=bool(usage))


def _names(names) -> sql.Composed:
    return sql.SQL(', ').join(sql.Identifier(*n.split('.', 1)) if '.' in n
                              else sql.Identifier('public', n) for n in names)


@translated
def keep_publication(cur, publication: str, role: str, *, create: bool = False,
                     set_tables=None, drop_tables=(), set_operations: bool = False,
                     identity_full=(), grant_tables=(), revoke_tables=(), grant_sequences=(),
                     revoke_sequences=(), grant_schema: bool = False) -> None:
    """The statements of a publication plan, in this transaction (tables by public name)."""
    pub, r = sql.Identifier(publication), sql.Identifier(role)
    for name in identity_full:  # before publishing: UPDATE/DELETE never refused meanwhile
        cur.execute(sql.SQL('ALTER TABLE {} REPLICA IDENTITY FULL').format(_names([name])))
    if create:
        cur.execute(sql.SQL('CREATE PUBLICATION {}').format(pub) + (
            sql.SQL(' FOR TABLE {}').format(_names(set_tables)) if set_tables else sql.SQL('')))
    elif set_tables:
        cur.execute(sql.SQL('ALTER PUBLICATION {} SET TABLE {}').format(pub, _names(set_tables)))
    if drop_tables:
        cur.execute(sql.SQL('ALTER PUBLICATION {} DROP TABLE {}').format(pub, _names(drop_tables)))
    if set_operations:
        cur.execute(sql.SQL("ALTER PUBLICATION {} SET "
                            "(publish = 'insert, update, delete, truncate')").format(pub))
    if grant_schema:
        cur.execute(sql.SQL('GRANT USAGE ON SCHEMA public TO {}').format(r))
    if grant_tables:
        cur.execute(sql.SQL('GRANT SELECT ON TABLE {} TO {}').format(_names(grant_tables), r))
    if revoke_tables:
        cur.execute(sql.SQL('REVOKE ALL ON TABLE {} FROM {}').format(_names(revoke_tables), r))
    if grant_sequences:
        cur.execute(sql.SQL('GRANT SELECT ON SEQUENCE {} TO {}').format(
            _names(grant_sequences), r))
    if revoke_sequences:
        cur.execute(sql.SQL('REVOKE ALL ON SEQUENCE {} FROM {}').format(
            _names(revoke_sequences), r))


@translated
def drop_publication(cur, publication: str, role: str | None) -> bool:
    """Drop the publication, and take back from `role` what keep_publication granted.
    Returns whether the publication existed."""
    cur.execute('SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = %s)', (publication,))
    existed = cur.fetchone()[0]
    cur.execute(sql.SQL('DROP PUBLICATION IF EXISTS {}').format(sql.Identifier(publication)))
    if role:
        r = sql.Identifier(role)
        cur.execute(sql.SQL('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}; '
                            'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}; '
                            'REVOKE ALL ON SCHEMA public FROM {}').format(r, r, r))
    return bool(existed)


@translated
def published_tables(cur, publication: str) -> set[str]:
    """The tables of the public schema in the publication (on the master)."""
    cur.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = %s "
                "AND schemaname = 'public'", (publication,))
    return {name for name, in cur.fetchall()}
