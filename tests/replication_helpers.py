"""Helpers for replication tests: configure a pair, compare tables row by row, and after
every run check that the slave's foreign keys hold and its copied tables equal the master's."""

import json
import os
import subprocess

from wazo_ha_common import replication, settings as settings_module

COPIED_SAMPLE = ('userfeatures', 'extensions', 'linefeatures', 'voicemail', 'tenant', 'context')


ROOT_PASSWORD = 'slave-root-password'


def configure(master, slave, paired=True):
    """Both roles set, then (paired) the Quick Summary's wazo-sync -i."""
    r = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address', master.ip)
    assert r.returncode == 0, r.stderr
    r = master.wazo('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', slave.ip)
    assert r.returncode == 0, r.stderr
    if paired:
        r = run_pairing(master, slave)
        assert r.returncode == 0, r.stderr


def run_pairing(master, slave, password=ROOT_PASSWORD):
    """wazo-sync -i through the slave's real sshd, answering its root password; the SSH key
    is made beforehand (ed25519: quicker than the RSA key wazo-sync would make)."""
    if not slave.sshd_pid:
        slave.set_root_password(ROOT_PASSWORD)
        slave.start_sshd()
    key = master.host_path('/root/.ssh/xivo_id_rsa')
    if not os.path.exists(key):
        subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'wazo-ha-sync',
                        '-f', key], check=True, capture_output=True)
    return master.wazo('wazo-sync', '-i', timeout=120, env=master.password_answers(password))


def public_tables(node):
    return node.psql("SELECT string_agg(tablename, ' ' ORDER BY tablename) FROM pg_tables "
                     "WHERE schemaname = 'public'").split()


def table_rows(node, table):
    """Every row of a table as text, sorted: an independent check of our fingerprints."""
    return node.psql(f'SELECT coalesce(string_agg(t::text, E\'\\n\' ORDER BY t::text), \'\') '
                     f'FROM public.{table} t')


def tables_rows(node, tables):
    """table -> its rows as table_rows gives them (unstripped), for many tables in one psql run
    (a psql run costs a process and a connection: a table at a time, hundreds of them, took
    most of a test's time). Hex in transit: the rows hold newlines and any character."""
    if not tables:
        return {}
    out = node.psql(' UNION ALL '.join(
        f"SELECT '{t}' || ' ' || encode(convert_to(coalesce(string_agg(x::text, E'\\n' "
        f"ORDER BY x::text), ''), 'UTF8'), 'hex') FROM public.{t} x" for t in tables))
    found = {}
    for line in out.splitlines():
        name, _, data = line.partition(' ')
        found[name] = bytes.fromhex(data).decode('utf-8')
    assert sorted(found) == sorted(tables), f'rows of {sorted(tables)}, got {sorted(found)}'
    return found


def table_digests(node, tables):
    """table -> md5 of its rows as text, sorted."""
    if not tables:
        return {}
    rows = node.psql(' UNION ALL '.join(
        f"SELECT '{t}' || ' ' || md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) "
        f"FROM public.{t} x" for t in tables))
    return dict(line.split(' ', 1) for line in rows.splitlines())


def snapshot(node, tables=None):
    """A digest of every row of every public table plus every sequence's state."""
    tables = tables or public_tables(node)
    rows = node.psql(' UNION ALL '.join(
        f"SELECT '{t}', md5(coalesce(string_agg(x::text, ',' ORDER BY x::text), '')) FROM public.{t} x"
        for t in tables))
    seqs = node.psql("SELECT string_agg(sequencename || '=' || coalesce(last_value, 0)::text, ' ' "
                     "ORDER BY sequencename) FROM pg_sequences WHERE schemaname = 'public'")
    return '\n'.join(sorted(rows.splitlines())) + '\n' + seqs


# every foreign key of the database, with its columns in key order (any schema)
FOREIGN_KEYS = """
SELECT k.conname, k.conrelid::regclass, k.confrelid::regclass,
       (SELECT string_agg(quote_ident(a.attname), ',' ORDER BY u.o)
        FROM unnest(k.conkey) WITH ORDINALITY u(n, o)
        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n),
       (SELECT string_agg(quote_ident(a.attname), ',' ORDER BY u.o)
        FROM unnest(k.confkey) WITH ORDINALITY u(n, o)
        JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n)
FROM pg_constraint k WHERE k.contype = 'f' ORDER BY 1, 2"""


def broken_foreign_keys(node):
    """'table.constraint' -> rows that break it, for every foreign key that does not hold:
    one anti-join per key, in one query."""
    checks = []
    for line in node.psql(FOREIGN_KEYS).splitlines():
        name, src, dst, cols, refs = line.split('|')
        cols, refs = cols.split(','), refs.split(',')
        filled = ' AND '.join(f'r.{c} IS NOT NULL' for c in cols)
        match = ' AND '.join(f'p.{p} = r.{c}' for c, p in zip(cols, refs))
        checks.append(f"SELECT '{src}.{name}', count(*) FROM {src} r WHERE {filled} "
                      f"AND NOT EXISTS (SELECT 1 FROM {dst} p WHERE {match})")
    assert len(checks) > 100, 'the Wazo schema has a few hundred foreign keys'
    out = node.psql(' UNION ALL '.join(checks))
    return {key: int(n) for key, n in (line.split('|') for line in out.splitlines()) if n != '0'}


def copied_table_names(master):
    """The public tables the master's settings copy."""
    patterns = settings_module.load(master.config).database.excluded_tables
    return replication.split_tables(public_tables(master), patterns)[0]


def assert_slave_consistent(master, slave):
    """Every foreign key of the slave holds, unless the master breaks it the same way (its own
    rows, copied as they are), and every copied table holds the master's rows."""
    broken = broken_foreign_keys(slave)
    if broken:
        on_master = broken_foreign_keys(master)
        assert {k: n for k, n in broken.items() if on_master.get(k) != n} == {}, \
            'foreign keys broken on the slave'
    tables = copied_table_names(master)
    m, s = table_digests(master, tables), table_digests(slave, tables)
    assert [t for t in tables if m[t] != s[t]] == [], 'copied tables differ'


def replicate(master, *args, timeout=600, check=True):
    """One run on the master. With a slave in the testbed, after it: the slave's foreign keys
    hold, and after a successful run its copied tables equal the master's."""
    result = master.wazo('xivo-master-slave-db-replication', *args, timeout=timeout)
    slave = master.bed.nodes.get('slave') if master.name == 'master' else None
    if check and slave is not None and slave.with_postgres:
        if result.returncode == 0 and 'replication to' in result.stdout:
            assert_slave_consistent(master, slave)
        else:
            broken = broken_foreign_keys(slave)
            assert broken == {} or broken.items() <= broken_foreign_keys(master).items(), broken
    return result


def tables_copied(master):
    """The tables the last run rewrote, sorted (from its state file, as wazo-ha-status reads it)."""
    with open(os.path.join(master.state_dir, 'replication.json')) as f:
        return sorted(json.load(f)['details']['tables_copied'])
