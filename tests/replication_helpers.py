"""Helpers for replication tests: configure a pair, compare tables row by row."""

import json
import os

COPIED_SAMPLE = ('userfeatures', 'extensions', 'linefeatures', 'voicemail', 'tenant', 'context')


def configure(master, slave):
    r = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address', master.ip)
    assert r.returncode == 0, r.stderr
    r = master.wazo('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', slave.ip)
    assert r.returncode == 0, r.stderr


def public_tables(node):
    return node.psql("SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables "
                     "WHERE schemaname = 'public'").split()


def table_rows(node, table):
    """Every row of a table as text, sorted: an independent check of our fingerprints."""
    return node.psql(f'SELECT coalesce(string_agg(t::text, E\'\\n\' ORDER BY t::text), \'\') '
                     f'FROM public.{table} t')


def snapshot(node, tables=None):
    """A digest of every row of every public table plus every sequence's state."""
    tables = tables or public_tables(node)
    rows = node.psql(' UNION ALL '.join(
        f"SELECT '{t}', md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM public.{t} x"
        for t in tables))
    seqs = node.psql("SELECT string_agg(sequencename || '=' || coalesce(last_value, 0)::text, ' ' "
                     "ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'public'")
    return '\n'.join(sorted(rows.splitlines())) + '\n' + seqs


def replicate(master, *args, timeout=600):
    return master.wazo('xivo-master-slave-db-replication', *args, timeout=timeout)


def tables_copied(master):
    """The tables the last run rewrote, sorted (from its state file, as wazo-ha-status reads it)."""
    with open(os.path.join(master.state_dir, 'replication.json')) as f:
        return sorted(json.load(f)['details']['tables_copied'])
