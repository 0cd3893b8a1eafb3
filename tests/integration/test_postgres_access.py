"""The slave's PostgreSQL, attacked from the master's address (which anyone may take while
the master is down) and from a third machine: only the replication role, with its password,
over TLS, from the master's address; and that role is no superuser."""

import os

import pytest

import baselines
from replication_helpers import configure, replicate, run_pairing
from testbed import sh

SYSCONFD_TRUST = 'host asterisk postgres 198.18.0.1/32 trust'
ROLE = 'wazo_ha_replication'


def psql(node, user, sql='SELECT 42', sslmode='require', password=None, passfile='/nonexistent'):
    """psql from inside `node` to the slave (198.18.0.2); never root's own ~/.pgpass."""
    env = {'PGCONNECT_TIMEOUT': '3', 'PGPASSFILE': passfile}
    if password is not None:
        env['PGPASSWORD'] = password
    return node.run('psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-w',
                    f'host=198.18.0.2 dbname=asterisk user={user} sslmode={sslmode}', '-c', sql,
                    env=env)


def the_password(master):
    with open(master.passfile) as f:
        return [line for line in f.read().splitlines() if f':{ROLE}:' in line][0].split(':', 4)[4]


@pytest.fixture
def trio(request):
    """Master and slave with PostgreSQL, a third machine without, HA not configured. Shared:
    the PG layout reset to its 'bare' baseline before each test."""
    return baselines.shaped(request, baselines.PG, 'bare')


def append_sysconfd_trust_line(slave):
    """What wazo-sysconfd's PUT /ha does on a slave: its trust line at the end."""
    with open(slave.pgdata + '/pg_hba.conf', 'a') as f:
        f.write(SYSCONFD_TRUST + '\n')
    slave.run(*slave._pg_ctl('reload'))


def test_only_the_paired_role_gets_in_from_the_master_and_it_is_no_superuser(trio):
    master, slave, other = trio
    assert psql(master, 'postgres').returncode != 0, 'closed before HA is configured'
    configure(master, slave)
    append_sysconfd_trust_line(slave)
    with open(slave.pgdata + '/pg_hba.conf') as f:
        hba = f.read().splitlines()
    assert hba[1:4] == [f'hostssl asterisk {ROLE} 198.18.0.1/32 scram-sha-256',
                        f'host all {ROLE} all reject', 'host all postgres 198.18.0.1/32 reject']
    assert hba[-1] == SYSCONFD_TRUST and not any('trust' in line for line in hba[:5])
    with open(slave.pgdata + '/conf.d/wazo-ha.conf') as f:
        assert "listen_addresses = '198.18.0.2, localhost'" in f.read()
    password = the_password(master)
    assert len(password) >= 40
    assert oct(os.stat(master.passfile).st_mode & 0o777) == '0o600'

    # superuser from the master's address, sysconfd's trust line appended: refused
    refused = psql(master, 'postgres')
    assert refused.returncode != 0
    assert 'pg_hba.conf rejects connection for host "198.18.0.1", user "postgres"' in refused.stderr
    assert psql(master, 'postgres', sslmode='disable').returncode != 0
    # the role without its password, with a wrong one, without TLS
    assert 'no password supplied' in psql(master, ROLE).stderr
    assert 'password authentication failed' in psql(master, ROLE, password='wrong').stderr
    plain = psql(master, ROLE, password=password, sslmode='disable')
    assert plain.returncode != 0 and 'no encryption' in plain.stderr
    # a third machine with the right password
    third = psql(other, ROLE, password=password)
    assert third.returncode != 0 and 'rejects connection for host "198.18.0.3"' in third.stderr

    # the right password, over TLS, from the master's address: in, as a plain role
    ok = psql(master, ROLE, 'SELECT current_user, ssl, (SELECT rolsuper FROM pg_roles '
                            'WHERE rolname = current_user) FROM pg_stat_ssl '
                            'WHERE pid = pg_backend_pid()', passfile=master.passfile)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f'{ROLE}|t|f'
    before = (slave.psql('SELECT string_agg(rolname, \' \' ORDER BY rolname) FROM pg_roles'),
              slave.psql('SELECT string_agg(extname, \' \' ORDER BY extname) FROM pg_extension'),
              slave.psql('SELECT string_agg(datname, \' \' ORDER BY datname) FROM pg_database'),
              open(slave.pgdata + '/postgresql.auto.conf').read())
    for attack in ("COPY (SELECT 1) TO PROGRAM 'touch /tmp/wazo-ha-pwned'",
                   "COPY (SELECT 1) TO '/tmp/wazo-ha-pwned'",
                   "SELECT pg_read_file('/etc/shadow')",
                   'CREATE ROLE intruder SUPERUSER LOGIN',
                   "ALTER SYSTEM SET work_mem = '1MB'",
                   'CREATE EXTENSION adminpack',
                   'CREATE EXTENSION file_fdw',
                   f'ALTER ROLE {ROLE} SUPERUSER',
                   f'ALTER ROLE {ROLE} CREATEROLE',
                   'SET ROLE postgres',
                   'CREATE DATABASE intruder',
                   'SET log_statement = none'):
        result = psql(master, ROLE, attack, passfile=master.passfile)
        assert result.returncode != 0, attack
        assert 'permission denied' in result.stderr or 'must be superuser' in result.stderr, \
            (attack, result.stderr)
    assert not os.path.exists('/tmp/wazo-ha-pwned')
    assert (slave.psql('SELECT string_agg(rolname, \' \' ORDER BY rolname) FROM pg_roles'),
            slave.psql('SELECT string_agg(extname, \' \' ORDER BY extname) FROM pg_extension'),
            slave.psql('SELECT string_agg(datname, \' \' ORDER BY datname) FROM pg_database'),
            open(slave.pgdata + '/postgresql.auto.conf').read()) == before
    # what the copy needs: the tables' owner's rights, and session_replication_role
    allowed = psql(master, ROLE, 'SET session_replication_role = replica; SET ROLE asterisk; '
                                 'SELECT current_user, count(*) FROM userfeatures',
                   passfile=master.passfile)
    assert allowed.returncode == 0 and allowed.stdout.strip() == 'asterisk|0', allowed.stderr


def test_disabling_the_slave_drops_the_role_and_closes_again(trio):
    master, slave, _ = trio
    configure(master, slave)
    assert psql(master, ROLE, passfile=master.passfile).returncode == 0
    result = slave.wazo('wazo-ha-config', 'set', '--node-type', 'disabled')
    assert result.returncode == 0, result.stderr
    assert f'dropped the replication role {ROLE}' in result.stdout
    assert slave.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{ROLE}'") == '0'
    assert psql(master, ROLE, passfile=master.passfile).returncode != 0
    with open(slave.pgdata + '/pg_hba.conf') as f:
        assert 'wazo-ha' not in f.read()


def test_replication_before_pairing_or_after_a_lost_password_says_to_pair(pair_unpaired):
    master, slave = pair_unpaired
    result = replicate(master)
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert 'run wazo-sync -i on this master' in result.stderr
    assert 'the slave is unchanged' in result.stderr

    first = run_pairing(master, slave)
    assert first.returncode == 0, first.stderr
    assert f'made a password for the role {ROLE}' in first.stdout
    assert 'accepts wazo_ha_replication with its password, over TLS' in first.stdout
    password = the_password(master)
    assert replicate(master).returncode == 0

    # the slave lost the password (rebuilt, or an admin reset it): one line, what to do
    slave.psql(f'ALTER ROLE {ROLE} PASSWORD NULL')
    lost = replicate(master)
    assert lost.returncode == 1 and 'run wazo-sync -i on this master' in lost.stderr
    again = run_pairing(master, slave)
    assert again.returncode == 0, again.stderr
    assert f'kept the password of the role {ROLE}' in again.stdout
    assert the_password(master) == password
    assert replicate(master).returncode == 0


def configured_unpaired(master, slave, _other):
    configure(master, slave, paired=False)


@pytest.fixture
def pair_unpaired(request):
    """Both roles set, wazo-sync -i not run. Shared: reset to this baseline before each test."""
    master, slave, _ = baselines.shaped(request, baselines.PG, 'unpaired', configured_unpaired)
    return master, slave


@pytest.mark.fresh_testbed('builds its pair itself')
def test_pairing_a_node_that_is_not_a_slave_fails_after_the_key_and_says_why(bed):
    master, slave = bed.add_node('master', 1), bed.add_node('slave', 2)
    assert master.wazo('wazo-ha-config', 'set', '--node-type', 'master',
                       '--remote-address', slave.ip).returncode == 0
    result = run_pairing(master, slave)
    assert result.returncode == 1
    assert 'the key is authorised on the slave' in result.stderr
    # the slave's pair-receive converges a slave only: this node has no ha.conf (not a slave)
    assert 'this node is not a slave (ha.conf says disabled)' in result.stderr
    assert slave.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{ROLE}'") == '0'


def test_tables_owned_by_a_superuser_are_refused(trio):
    master, slave, _ = trio
    slave.psql('ALTER TABLE userfeatures OWNER TO postgres')
    result = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address', master.ip)
    assert result.returncode == 1
    assert 'must belong to one role (found: asterisk, postgres)' in result.stderr
    slave.psql('ALTER TABLE userfeatures OWNER TO asterisk; ALTER ROLE asterisk SUPERUSER')
    result = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address', master.ip)
    assert result.returncode == 1 and 'a superuser or a role' in result.stderr
    with open(slave.pgdata + '/pg_hba.conf') as f:
        assert 'wazo-ha' not in f.read(), 'nothing opened'
    assert slave.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{ROLE}'") == '0'


def test_same_configuration_twice_changes_nothing(pair):
    master, slave = pair
    args = ['set', '--node-type', 'slave', '--remote-address', master.ip]
    first = slave.wazo('wazo-ha-config', *args)
    assert first.returncode == 0, first.stderr
    pid_before = open(slave.pgdata + '/postmaster.pid').readline()
    second = slave.wazo('wazo-ha-config', *args)
    assert second.returncode == 0, second.stderr
    assert 'nothing to change' in second.stdout
    assert 'changed:' not in second.stdout
    assert open(slave.pgdata + '/postmaster.pid').readline() == pid_before, 'no restart'


def test_own_address_is_refused_inside_the_node(pair):
    master, slave = pair
    result = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave',
                        '--remote-address', slave.ip)
    assert result.returncode == 2
    assert 'address of this node' in result.stderr
    assert not sh('test', '-e', slave.ha_conf, check=False).returncode == 0
