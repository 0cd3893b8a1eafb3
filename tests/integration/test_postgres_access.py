"""wazo-ha-config on a slave opens its PostgreSQL to the master's address, and only to it."""

import json

import pytest

from testbed import sh

CONNECT = ['psql', '-X', '-A', '-t', '-h', '198.18.0.2', '-U', 'postgres', '-d', 'asterisk',
           '-c', 'select 42']


def connect_from(node):
    return node.run(*CONNECT, env={'PGCONNECT_TIMEOUT': '3'})


@pytest.fixture
def trio(bed):
    master = bed.add_node('master', 1)
    slave = bed.add_node('slave', 2)
    other = bed.add_node('other', 3, with_postgres=False)
    return master, slave, other


def test_slave_accepts_the_master_only_then_closes_again(trio):
    master, slave, other = trio
    assert connect_from(master).returncode != 0, 'closed before HA is configured'

    result = slave.wazo('wazo-ha-config', 'set', '--node-type', 'slave',
                        '--remote-address', master.ip)
    assert result.returncode == 0, result.stderr
    assert 'PostgreSQL restarted' in result.stdout

    ok = connect_from(master)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == '42'
    refused = connect_from(other)
    assert refused.returncode != 0
    assert 'no pg_hba.conf entry for host "198.18.0.3"' in refused.stderr

    with open(slave.ha_conf) as f:
        assert json.load(f) == {'node_type': 'slave', 'remote_address': '198.18.0.1'}

    result = slave.wazo('wazo-ha-config', 'set', '--node-type', 'disabled')
    assert result.returncode == 0, result.stderr
    assert connect_from(master).returncode != 0
    with open(slave.pgdata + '/pg_hba.conf') as f:
        assert 'wazo-ha' not in f.read()


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
