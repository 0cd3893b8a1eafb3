"""The shared testbeds' reset (tests/baselines.py): it undoes what a test leaves on its nodes,
and what it cannot undo makes it fail, never pass unnoticed."""

import os
import subprocess

import pytest

import baselines


@pytest.fixture
def shared(session_dir, pg_template):
    """A shared testbed of the test's own: master without PostgreSQL, slave with, and the
    slave's sshd running in its baseline."""
    bed = baselines.SharedBed(session_dir, pg_template, baselines.SYNC)
    try:
        def with_sshd(master, slave):
            slave.set_root_password('baseline-password')
            slave.start_sshd()
            slave.psql("CREATE TABLE recorded (name text); INSERT INTO recorded VALUES ('kept')")
        bed.use('sshd', with_sshd)
        yield bed
    finally:
        bed.close()


def listening(node, port):
    return f'{node.ip}:{port}' in node.run('ss', '-Hltn').stdout


@pytest.mark.fresh_testbed('a shared testbed of its own, damaged on purpose')
def test_a_reset_undoes_files_processes_links_mounts_daemons_and_the_database(shared):
    master, slave = shared.nodes
    with open(slave.ha_conf, 'w') as f:  # a file rewritten, one added, one removed
        f.write('{"node_type": "master", "remote_address": "198.18.0.1"}')
    with open(os.path.join(master.state_dir, 'left-behind.json'), 'w') as f:
        f.write('{}')
    os.unlink(os.path.join(master.root, 'stand-ins', 'wazo-service'))
    sleeper = master.popen('sleep', '600', start_new_session=True)
    slave.stop_sshd()
    slave.psql("UPDATE recorded SET name = 'changed'; CREATE ROLE intruder")
    master.link(up=False)
    master.run('mount', '-t', 'tmpfs', 'tmpfs', '/var/lib/wazo')
    slave.stop_postgres('immediate')

    shared.reset('sshd')

    assert sleeper.wait(timeout=10) is not None
    assert not os.path.exists(slave.ha_conf), 'the bare slave had no ha.conf'
    assert not os.path.exists(os.path.join(master.state_dir, 'left-behind.json'))
    assert os.path.exists(os.path.join(master.root, 'stand-ins', 'wazo-service'))
    assert slave.psql('SELECT name FROM recorded') == 'kept'
    assert slave.psql("SELECT count(*) FROM pg_roles WHERE rolname = 'intruder'") == '0'
    assert slave.sshd_pid and listening(slave, 22)
    assert master.run('ping', '-c', '1', '-W', '2', slave.ip).returncode == 0
    open(master.host_path('/var/lib/wazo/seen-by-the-host'), 'w').close()
    assert master.run('test', '-e', '/var/lib/wazo/seen-by-the-host').returncode == 0, \
        'the tmpfs mounted by the test is gone: the node sees its own directory again'


@pytest.mark.fresh_testbed('a shared testbed of its own, damaged on purpose')
def test_what_a_reset_cannot_undo_fails_it(shared):
    master, slave = shared.nodes
    slave.run('ip', 'addr', 'add', '198.18.0.9/24', 'dev', 'eth0')
    with pytest.raises(AssertionError,
                       match=r'reset to baseline sshd after .* failed.*slave: network'):
        shared.reset('sshd')
    slave.run('ip', 'addr', 'del', '198.18.0.9/24', 'dev', 'eth0')
    shared.reset('sshd')  # once undone by hand, the reset passes again
    shared.bed.add_node('added', 3, with_postgres=False)
    with pytest.raises(AssertionError, match='node added was added'):
        shared.reset('sshd')
    assert 'added' not in shared.bed.nodes
    shared.reset('sshd')
    assert slave.psql('SELECT name FROM recorded') == 'kept'
    assert subprocess.run(['ip', '-n', slave.ns, '-4', '-br', 'addr', 'show', 'eth0'],
                          capture_output=True, text=True).stdout.split()[2:] == [f'{slave.ip}/24']
