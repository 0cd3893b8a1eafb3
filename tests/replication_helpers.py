"""Helpers for replication tests: configure a pair, compare tables row by row."""

import json
import os
import subprocess

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
    askpass = os.path.join(master.root, 'askpass')
    with open(askpass, 'w') as f:
        f.write(f'#!/bin/sh\necho {password}\n')
    os.chmod(askpass, 0o755)
    return master.wazo('wazo-sync', '-i', timeout=120, env={
        'SSH_ASKPASS': askpass, 'SSH_ASKPASS_REQUIRE': 'force', 'DISPLAY': ':0'})


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
