"""The master's side of continuous mode ([database] mode = continuous): its publication, its
stream role attacked from the slave's address and from a third machine, its removal, and
hourly mode left as it was.

What the stream role CAN do that we cannot prevent on PostgreSQL 15 (proved, not hidden, by
test_what_postgresql_15_lets_a_replication_role_do): a REPLICATION role that may open a
logical replication connection (`replication=database`) to the asterisk database may create
logical slots of its own and decode every change of that database, the excluded tables
(auth_token, call logs...) included; and in that very connection PostgreSQL 15 runs the
physical replication commands too (START_REPLICATION PHYSICAL, BASE_BACKUP: every file of
the cluster, other databases and pg_authid's password verifiers included). pg_hba.conf refuses
the `replication` keyword (physical connections) but cannot tell these apart. The role's
password lives only in the slave's root-only password file and is usable only from the
slave's address, over TLS: whoever is root on the slave can do all this.
"""

import os
import signal
import textwrap
import time

import pytest

import baselines
from replication_helpers import configure, copied_table_names, run_pairing, table_digests
from wazo_ha_common.stream.publication import FIXTURE_FULL

STREAM = 'wazo_ha_stream'
CONTINUOUS = {'database': {'mode': 'continuous'}}
MASTER_IP = '198.18.0.1'


def stream_psql(node, sql='SELECT 42', dbname='asterisk', sslmode='require', password=None,
                passfile='/nonexistent', replication=None, user=STREAM):
    """psql from inside `node` to the master (198.18.0.1) as the stream role."""
    env = {'PGCONNECT_TIMEOUT': '3', 'PGPASSFILE': passfile}
    if password is not None:
        env['PGPASSWORD'] = password
    dsn = f'host={MASTER_IP} dbname={dbname} user={user} sslmode={sslmode}'
    if replication:
        dsn += f' replication={replication}'
    return node.run('psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-w', dsn,
                    '-c', sql, env=env)


def stream_password(slave):
    """The stream role's password as the slave keeps it (its [database] passfile)."""
    with open(slave.passfile) as f:
        lines = [line for line in f.read().splitlines()
                 if line.startswith(f'{MASTER_IP}:5432:asterisk:{STREAM}:')]
    assert len(lines) == 1, lines
    return lines[0].split(':', 4)[4]


def configured_continuous(master, slave, _other):
    for node in (master, slave):
        node.write_settings(**CONTINUOUS)
    configure(master, slave)


@pytest.fixture
def continuous(request):
    """Master 198.18.0.1 and slave 198.18.0.2 in continuous mode, configured and paired; a
    third machine 198.18.0.3 without PostgreSQL. Shared: reset to this baseline before each
    test."""
    return baselines.shaped(request, baselines.PG, 'stream-access', configured_continuous)


def published(master):
    return master.psql("SELECT coalesce(string_agg(tablename, ' ' ORDER BY tablename), '') "
                       "FROM pg_publication_tables WHERE pubname = 'wazo_ha'").split()


def test_publication_holds_the_copied_tables_and_every_update_and_delete_still_works(continuous):
    """The publication holds exactly the copied tables with the four operations; the tables
    with REPLICA IDENTITY FULL are FIXTURE_FULL (none: every Wazo table has a primary key);
    an UPDATE and a DELETE of real rows succeed on every published table (PostgreSQL refuses
    them on a published table it cannot identify rows of); the master runs wal_level logical
    with the slot limit; a second `set` changes nothing."""
    master, slave, _ = continuous
    tables = published(master)
    assert tables == copied_table_names(master) and len(tables) > 100
    assert 'auth_token' not in tables and 'call_logd_call_log' not in tables
    assert master.psql("SELECT pubinsert AND pubupdate AND pubdelete AND pubtruncate "
                       "FROM pg_publication WHERE pubname = 'wazo_ha'") == 't'
    assert master.psql("SELECT coalesce(string_agg(relname, ' ' ORDER BY relname), '') "
                       "FROM pg_class WHERE relreplident = 'f'").split() == list(FIXTURE_FULL)
    assert master.psql('SHOW wal_level') == 'logical'
    assert master.psql('SHOW max_slot_wal_keep_size') == '1GB'
    # every address: the value does not change when PUT /ha makes a node master (its restart
    # comes first), pg_hba.conf admits the stream role from the slave's address only
    assert master.psql('SHOW listen_addresses') == '*'
    # every row of every published table updated then deleted; triggers and foreign keys off
    # (they are not what is proved), everything rolled back
    # (PostgreSQL checks the replica identity when the statement starts: an empty table
    # proves it as well as a full one)
    before = table_digests(master, tables)
    script = ['BEGIN;', 'SET LOCAL session_replication_role = replica;']
    for table in tables:
        column = master.psql(f"SELECT attname FROM pg_attribute WHERE attrelid = "
                             f"'public.{table}'::regclass AND attnum > 0 AND NOT attisdropped "
                             "AND attgenerated = '' AND attidentity <> 'a' ORDER BY attnum LIMIT 1")
        script += [f'UPDATE public.{table} SET {column} = {column};',
                   f'DELETE FROM public.{table};']
    script.append('ROLLBACK;')
    result = master.run('runuser', '-u', 'postgres', '--', 'psql', '-X', '-q', '-v',
                        'ON_ERROR_STOP=1', '-d', 'asterisk', input='\n'.join(script) + '\n')
    assert result.returncode == 0, result.stderr
    assert table_digests(master, tables) == before, 'rolled back'
    again = master.wazo('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address',
                        slave.ip)
    assert again.returncode == 0 and 'changed:' not in again.stdout, again.stdout


def test_a_table_without_primary_key_gets_replica_identity_full_and_joins(continuous):
    """A table added without a primary key (a later Wazo version, or by hand) and published
    would make the master refuse its UPDATE; `set` (as the hourly run) gives it REPLICA
    IDENTITY FULL, publishes it, grants it to the stream role and says so; an excluded one
    is neither published nor touched."""
    master, slave, _ = continuous
    master.psql('CREATE TABLE public.no_key (a int, b text); INSERT INTO no_key VALUES (1, \'x\'); '
                'CREATE TABLE public.stat_no_key (a int); ALTER TABLE no_key OWNER TO asterisk; '
                'ALTER PUBLICATION wazo_ha ADD TABLE no_key')
    for statement in ("UPDATE no_key SET b = 'y'", "DELETE FROM no_key WHERE false"):
        refused = master.run('runuser', '-u', 'postgres', '--', 'psql', '-X', '-d', 'asterisk',
                             '-v', 'ON_ERROR_STOP=1', '-c', statement)
        assert refused.returncode != 0, statement
        assert 'does not have a replica identity' in refused.stderr, refused.stderr
    result = master.wazo('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address',
                         slave.ip)
    assert result.returncode == 0, result.stderr
    assert 'table no_key: REPLICA IDENTITY FULL' in result.stdout
    master.psql("UPDATE no_key SET b = 'y'; DELETE FROM no_key")
    assert master.psql("SELECT relname::text || relreplident::text FROM pg_class WHERE relname IN "
                       "('no_key', 'stat_no_key') ORDER BY 1") == 'no_keyf\nstat_no_keyd'
    assert 'no_key' in published(master) and 'stat_no_key' not in published(master)
    with open(master.log_file) as f:
        assert 'table no_key has no primary key: REPLICA IDENTITY FULL' in f.read()
    password = stream_password(slave)
    assert stream_psql(slave, 'SELECT count(*) FROM no_key', password=password).returncode == 0
    master.psql('DROP TABLE no_key')
    again = master.wazo('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address',
                        slave.ip)
    assert again.returncode == 0, again.stderr


def test_pairing_gives_the_slave_the_stream_password_once_and_never_shows_it(continuous):
    """wazo-sync -i makes the password once (0600 on the master, only its SCRAM verifier in
    PostgreSQL), puts it in the slave's password file (0600, the replication line kept) for
    the master's address; a second run keeps it; it is in no log of either node."""
    master, slave, _ = continuous
    password = stream_password(slave)
    assert len(password) >= 40
    path = os.path.join(master.state_dir, 'stream-password')
    with open(path) as f:
        assert f.read().strip() == password
    assert oct(os.stat(path).st_mode & 0o777) == '0o600'
    assert oct(os.stat(slave.passfile).st_mode & 0o777) == '0o600'
    assert master.psql(f"SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid "
                       f"WHERE rolname = '{STREAM}'") == 't'
    again = run_pairing(master, slave)
    assert again.returncode == 0, again.stderr
    assert f'kept the password of the stream role {STREAM}' in again.stdout
    assert stream_password(slave) == password
    with open(master.passfile) as f:
        text = f.read()
    assert ':wazo_ha_replication:' in text and password not in text
    for node in (master, slave):
        for log in (node.log_file, node.pglog):
            with open(log, errors='replace') as f:
                assert password not in f.read(), log


def test_the_stream_role_reads_and_streams_the_copied_tables_and_nothing_more(continuous):
    """From the slave's address, with its password, over TLS: it reads a copied table and
    opens a logical replication connection. Refused: any write, an excluded table, creating
    anything, server programs and files, other roles' rights, another database, a physical
    replication connection, no TLS, a wrong password, the third machine."""
    master, slave, other = continuous
    password = stream_password(slave)
    ok = stream_psql(slave, "SELECT count(*) >= 0, (SELECT ssl FROM pg_stat_ssl WHERE pid = "
                     "pg_backend_pid()) FROM userfeatures", passfile=slave.passfile)
    assert ok.returncode == 0 and ok.stdout.strip() == 't|t', ok.stderr
    logical = stream_psql(slave, 'IDENTIFY_SYSTEM', password=password, replication='database')
    assert logical.returncode == 0 and logical.stdout.strip().endswith('|asterisk'), logical.stderr
    sequence = master.psql("SELECT pg_get_serial_sequence('userfeatures', 'id')")
    assert stream_psql(slave, f"SELECT last_value FROM {sequence}",
                       password=password).returncode == 0

    before = master.psql("SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM "
                         "userfeatures t")
    for attack in ("INSERT INTO tenant (uuid) VALUES ('00000000-0000-0000-0000-000000000001')",
                   'UPDATE userfeatures SET firstname = firstname',
                   'DELETE FROM userfeatures', 'TRUNCATE userfeatures', 'TRUNCATE extensions',
                   'SELECT count(*) FROM auth_token', 'SELECT count(*) FROM call_logd_call_log',
                   'SELECT count(*) FROM stat_call_on_queue',
                   'CREATE TABLE public.intruder (a int)', 'CREATE SCHEMA intruder',
                   "COPY (SELECT 1) TO PROGRAM 'touch /tmp/wazo-ha-stream-pwned'",
                   "COPY (SELECT 1) TO '/tmp/wazo-ha-stream-pwned'",
                   "SELECT pg_read_file('/etc/shadow')",
                   "SELECT pg_ls_dir('.')",
                   'CREATE ROLE intruder SUPERUSER LOGIN', f'ALTER ROLE {STREAM} SUPERUSER',
                   f'ALTER ROLE {STREAM} BYPASSRLS', 'SET ROLE asterisk', 'SET ROLE postgres',
                   "ALTER SYSTEM SET wal_level = 'replica'", 'CREATE DATABASE intruder',
                   'ALTER PUBLICATION wazo_ha ADD TABLE auth_token',
                   'CREATE PUBLICATION intruder FOR ALL TABLES'):
        result = stream_psql(slave, attack, password=password)
        assert result.returncode != 0, attack
        assert any(s in result.stderr for s in ('permission denied', 'must be superuser',
                                                'must be owner', 'must have', 'not allowed',
                                                'only superuser')), (attack, result.stderr)
    assert not os.path.exists('/tmp/wazo-ha-stream-pwned')
    assert master.psql("SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM "
                       "userfeatures t") == before

    def refused(result, why):
        assert result.returncode != 0 and why in result.stderr, result.stderr
    refused(stream_psql(slave, dbname='postgres', password=password),
            f'pg_hba.conf rejects connection for host "198.18.0.2", user "{STREAM}", '
            'database "postgres"')
    refused(stream_psql(slave, dbname='template1', password=password), 'pg_hba.conf rejects')
    # physical replication: the `replication` keyword line refuses it
    refused(stream_psql(slave, 'IDENTIFY_SYSTEM', password=password, replication='true'),
            'pg_hba.conf rejects replication connection for host "198.18.0.2", user '
            f'"{STREAM}"')
    refused(stream_psql(slave, password=password, sslmode='disable'), 'no encryption')
    refused(stream_psql(slave, password='wrong-password'), 'password authentication failed')
    refused(stream_psql(slave), 'no password supplied')
    refused(stream_psql(other, password=password), 'rejects connection for host "198.18.0.3"')
    refused(stream_psql(other, 'IDENTIFY_SYSTEM', password=password, replication='database'),
            'rejects connection for host "198.18.0.3"')
    # the master's other roles from the slave's address: not opened by us
    refused(stream_psql(slave, user='postgres', password=password), 'pg_hba.conf')
    refused(stream_psql(slave, user='asterisk', password='proformatique'), 'pg_hba.conf')


# a libpq client that runs replication commands and prints the result status of each (psql
# cannot show COPY results): 8 = COPY_BOTH (streaming started), 3 = COMMAND_OK, 7 = error
LIBPQ_CLIENT = textwrap.dedent('''\
    import ctypes, ctypes.util, sys
    pq = ctypes.CDLL(ctypes.util.find_library("pq"))
    pq.PQconnectdb.restype = ctypes.c_void_p
    pq.PQstatus.argtypes = [ctypes.c_void_p]
    pq.PQexec.restype = ctypes.c_void_p
    pq.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    pq.PQresultStatus.argtypes = [ctypes.c_void_p]
    pq.PQerrorMessage.restype = ctypes.c_char_p
    pq.PQerrorMessage.argtypes = [ctypes.c_void_p]
    conn = pq.PQconnectdb(sys.argv[1].encode())
    if pq.PQstatus(conn) != 0:
        sys.exit(pq.PQerrorMessage(conn).decode())
    print(pq.PQresultStatus(pq.PQexec(conn, sys.argv[2].encode())),
          pq.PQerrorMessage(conn).decode().strip())
    ''')


def test_what_postgresql_15_lets_a_replication_role_do(continuous):
    """Not a wish, a record: what the stream role can do that PostgreSQL 15 gives any role
    that may open a logical replication connection, and that nothing in pg_hba.conf or the
    grants prevents. It creates a logical slot of its own and decodes the changes of an
    excluded table (auth_token), which it may not SELECT; over that same connection it starts
    physical streaming of the whole cluster's WAL. If a PostgreSQL upgrade refuses any of
    this, this test fails: update the README's continuous mode section."""
    master, slave, _ = continuous
    password = stream_password(slave)
    dsn = (f'host={MASTER_IP} dbname=asterisk user={STREAM} sslmode=require '
           f'password={password}')
    created = stream_psql(slave, "SELECT pg_create_logical_replication_slot("
                          "'intruder_slot', 'test_decoding')", password=password)
    assert created.returncode == 0, created.stderr
    master.psql("SET session_replication_role = replica; INSERT INTO auth_token "
                "(session_uuid, auth_id, user_agent) VALUES ('s', 'a', 'decoded-by-the-stream-role')")
    # the testbed commits asynchronously (synchronous_commit = off) and decoding reads only
    # flushed WAL: ask until the change is there
    decoded = ''
    deadline = time.monotonic() + 10
    while 'decoded-by-the-stream-role' not in decoded and time.monotonic() < deadline:
        changes = stream_psql(slave, "SELECT string_agg(data, E'\\n') FROM "
                              "pg_logical_slot_get_changes('intruder_slot', NULL, NULL)",
                              password=password)
        assert changes.returncode == 0, changes.stderr
        decoded += changes.stdout
        time.sleep(0.2)
    assert 'decoded-by-the-stream-role' in decoded
    assert 'table public.auth_token' in decoded
    stream_psql(slave, "SELECT pg_drop_replication_slot('intruder_slot')", password=password)
    lsn = master.psql('SELECT pg_current_wal_lsn()')
    physical = slave.run('/usr/bin/python3', '-c', LIBPQ_CLIENT, dsn + ' replication=database',
                         f'START_REPLICATION PHYSICAL {lsn}')
    assert physical.returncode == 0 and physical.stdout.split()[0] == '8', \
        (physical.stdout, physical.stderr)


def slot_names(master):
    return master.psql("SELECT coalesce(string_agg(slot_name, ' ' ORDER BY slot_name), '') "
                       "FROM pg_replication_slots").split()


def test_disabling_the_master_takes_everything_back(continuous):
    """`set --node-type disabled` on a continuous master ends the walsender streaming from a
    slot of ours, drops every slot named wazo_ha_slot_*, the publication, the stream role,
    the pg_hba.conf block and of conf.d/wazo-ha.conf what the installation does not put there
    (continuous mode keeps wal_level = logical and listen_addresses on every role, for the
    restart of the next PUT /ha: no restart then); the slave's password no longer opens
    anything; a second run has nothing to do. In hourly mode the file goes too (below)."""
    master, slave, _ = continuous
    password = stream_password(slave)
    idle = stream_psql(slave, 'CREATE_REPLICATION_SLOT wazo_ha_slot_idle LOGICAL pgoutput',
                       password=password, replication='database')
    assert idle.returncode == 0, idle.stderr
    receiver = slave.popen('/usr/lib/postgresql/15/bin/pg_recvlogical', '-d',
                           f'host={MASTER_IP} dbname=asterisk user={STREAM} sslmode=require',
                           '--slot', 'wazo_ha_slot_busy', '--create-slot', '--start',
                           '-P', 'test_decoding', '-f', '/dev/null', '--no-loop',
                           env={'PGPASSWORD': password, 'PGPASSFILE': '/nonexistent'},
                           stdout=open(os.devnull, 'w'), stderr=open(os.devnull, 'w'))
    try:
        for _ in range(100):
            if master.psql("SELECT count(*) FROM pg_replication_slots WHERE active") == '1':
                break
            time.sleep(0.1)
        assert slot_names(master) == ['wazo_ha_slot_busy', 'wazo_ha_slot_idle']
        result = master.wazo('wazo-ha-config', 'set', '--node-type', 'disabled')
        assert result.returncode == 0, result.stderr
        assert 'dropped the replication slots wazo_ha_slot_busy, wazo_ha_slot_idle' in result.stdout
        assert receiver.wait(timeout=30) != 0, 'its walsender was ended'
    finally:
        if receiver.poll() is None:
            receiver.send_signal(signal.SIGTERM)
            receiver.wait(timeout=10)
    assert slot_names(master) == []
    assert master.psql("SELECT count(*) FROM pg_publication") == '0'
    assert master.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{STREAM}'") == '0'
    with open(master.pgdata + '/pg_hba.conf') as f:
        assert 'wazo-ha' not in f.read()
    with open(master.pgdata + '/conf.d/wazo-ha.conf') as f:
        assert [line for line in f.read().splitlines() if not line.startswith('#')] == [
            'wal_level = logical', "listen_addresses = '*'"]
    assert 'PostgreSQL restarted' not in result.stdout
    assert stream_psql(slave, password=password).returncode != 0
    again = master.wazo('wazo-ha-config', 'set', '--node-type', 'disabled')
    assert again.returncode == 0 and 'changed:' not in again.stdout, again.stdout


def test_back_to_hourly_mode_takes_everything_back_too(continuous):
    """A continuous master set again in hourly mode drops the publication, the role and the
    files, as disabling does; a slave-to-be loses nothing it needs."""
    master, slave, _ = continuous
    master.write_settings()
    result = master.wazo('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address',
                         slave.ip)
    assert result.returncode == 0, result.stderr
    assert 'dropped the publication wazo_ha' in result.stdout
    assert f'dropped the stream role {STREAM}' in result.stdout
    assert master.psql("SELECT count(*) FROM pg_publication") == '0'
    assert not os.path.exists(master.pgdata + '/conf.d/wazo-ha.conf')
    with open(master.pgdata + '/pg_hba.conf') as f:
        assert 'wazo-ha' not in f.read()


def test_hourly_mode_changes_nothing_new_on_the_master(pair):
    """The default (hourly) mode: configuring and pairing make no stream role, publication,
    slot, pg_hba.conf line, conf file, stream password or slave password-file line, and the
    master's PostgreSQL is not restarted."""
    master, slave = pair
    pid = open(master.pgdata + '/postmaster.pid').readline()
    with open(master.pgdata + '/pg_hba.conf') as f:
        hba = f.read()
    configure(master, slave)
    assert open(master.pgdata + '/postmaster.pid').readline() == pid
    with open(master.pgdata + '/pg_hba.conf') as f:
        assert f.read() == hba
    assert not os.path.exists(master.pgdata + '/conf.d/wazo-ha.conf')
    assert master.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{STREAM}'") == '0'
    assert master.psql('SELECT count(*) FROM pg_publication') == '0'
    assert master.psql('SHOW wal_level') == 'replica'
    assert not os.path.exists(os.path.join(master.state_dir, 'stream-password'))
    assert not os.path.exists(slave.passfile) or STREAM not in open(slave.passfile).read()
