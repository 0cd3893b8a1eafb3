"""PUT /ha through Wazo on a node where wazo-ha is installed (its diversions in place).

wazo-sysconfd's HA handler is replayed step for step by tests/sysconfd_stand_in.py (read from
wazo-platform/wazo-sysconfd, wazo_sysconfd/plugins/ha_config/ha.py): it runs
/usr/sbin/xivo-manage-slave-services start (ours, through the diversion) for master and
disabled, and the request fails if that exits non-zero. The node runs in its own namespaces
with its own PostgreSQL 15 cluster, which the handler really restarts; the peer at
198.18.0.1 answers ping. The installed commands run (PYTHONPATH empty: the package's module).
"""

import json
import os
import shutil

import pytest

from package_helpers import sh, stand_ins_installed
from testbed import REPO

SYSCONFD = os.path.join(REPO, 'tests', 'sysconfd_stand_in.py')
INSTALLED = {'PYTHONPATH': ''}
PEER = '198.18.0.1'
MANAGE_START = '/usr/sbin/xivo-manage-slave-services start'


class Node:
    """The node under test, with what the sysconfd stand-in needs."""

    def __init__(self, node, tmp_path):
        self.node = node
        self.cron_dir = str(tmp_path / 'cron.d')
        self.record = str(tmp_path / 'sysconfd-steps')
        os.makedirs(self.cron_dir)
        self.fake_cron = os.path.join(node.root, 'cron')
        shutil.copy('/bin/sh', self.fake_cron)  # cron is an ancestor of the jobs it starts

    def put_ha(self, node_type, remote=''):
        open(self.record, 'w').close()
        body = json.dumps({'node_type': node_type, 'remote_address': remote})
        restart = ' '.join(self.node._pg_ctl('-w', '-m', 'fast', 'restart'))
        result = self.node.run('/usr/bin/python3', SYSCONFD, body, '--pg-dir', self.node.pgdata,
                               '--restart', restart, '--cron-dir', self.cron_dir,
                               '--record', self.record, env=INSTALLED)
        with open(self.record) as f:
            return result, f.read().splitlines()

    def cron_files(self):
        return sorted(os.listdir(self.cron_dir))

    def cron_commands(self, name):
        """The commands of a cron file's lines (after the five time fields and the user)."""
        with open(name if name.startswith('/') else os.path.join(self.cron_dir, name)) as f:
            return [line.split(None, 6)[6] for line in f
                    if line.strip() and not line.startswith('#') and '=' not in line.split()[0]]

    def run_as_cron(self, *commands):
        """Start commands at the same moment, as two cron files would; wait for them."""
        procs = [self.node.popen(self.fake_cron, '-c', c, env=INSTALLED) for c in commands]
        return [p.wait(timeout=120) for p in procs]

    def hba_ha_lines(self):
        with open(os.path.join(self.node.pgdata, 'pg_hba.conf')) as f:
            return [line.strip() for line in f if line.startswith('host asterisk postgres')]

    def sentinels(self):
        return sorted(n for n in ('is-primary', 'is-secondary')
                      if os.path.exists(os.path.join(self.node.sentinel_dir, n)))

    def disabled_at_boot(self):
        return os.path.exists(os.path.join(self.node.sentinel_dir, 'disabled'))

    def log(self):
        with open(self.node.log_file) as f:
            return f.read()


@pytest.fixture(scope='module')
def installed_on_a_wazo_node(tmp_path_factory, deb):
    """The stand-ins of Wazo's packages, then wazo-ha, installed once for these tests: they
    change their nodes, never the installation."""
    with stand_ins_installed(tmp_path_factory.mktemp('stand-ins')):
        installed = sh('dpkg', '-i', deb[0])
        assert installed.returncode == 0, installed.stderr
        yield
        # what made sharing it right: every installed file as dpkg installed it
        verified = sh('dpkg', '--verify', 'xivo-config', 'xivo-sync', 'wazo-ha')
        assert verified.returncode == 0 and verified.stdout == '', verified.stdout + verified.stderr


@pytest.fixture
def wazo(installed_on_a_wazo_node, bed, tmp_path):
    assert 'xivo-manage-slave-services.distrib by wazo-ha' in sh('dpkg-divert', '--list').stdout
    bed.add_node('peer', 1, with_postgres=False)
    return Node(bed.add_node('node', 2), tmp_path)


def steps_for(node_type):
    steps = ['write ha.conf', 'pg_hba: delete host asterisk postgres lines']
    if node_type == 'slave':
        steps.append('pg_hba: append the trust line')
    steps.append('postgresql.conf: delete listen_addresses')
    if node_type == 'slave':
        steps.append("postgresql.conf: append listen_addresses = '*'")
    steps += ['restart PostgreSQL', 'cron files']
    if node_type != 'slave':
        steps.append(MANAGE_START)
    return steps + ['sentinels']


def assert_master(wazo):
    assert wazo.sentinels() == ['is-primary']
    assert wazo.hba_ha_lines() == []
    assert wazo.cron_files() == ['xivo-ha-master']
    assert wazo.node.services_state() == 'all' and not wazo.disabled_at_boot()


def assert_slave(wazo):
    assert wazo.sentinels() == ['is-secondary']
    assert wazo.hba_ha_lines() == [f'host asterisk postgres {PEER}/32 trust']
    assert wazo.cron_files() == ['xivo-ha-slave']
    peer = wazo.node.bed.nodes['peer']
    reached = peer.run('psql', '-h', wazo.node.ip, '-U', 'postgres', '-d', 'asterisk', '-XAtc',
                       'SELECT 1', timeout=30)
    assert reached.stdout.strip() == '1', 'PostgreSQL was restarted with the new access'


def test_put_ha_succeeds_for_every_role_and_every_change_of_role(wazo):
    result, steps = wazo.put_ha('master', PEER)
    assert result.returncode == 0, result.stderr
    assert steps == steps_for('master')
    assert_master(wazo)
    assert wazo.node.stand_in_calls()[-2:] == ['wazo-service start',
                                               'wazo-agentd-cli -c relog all --timeout 60']

    # master to slave: the handler starts nothing; the check stops the telephony later
    result, steps = wazo.put_ha('slave', PEER)
    assert result.returncode == 0, result.stderr
    assert steps == steps_for('slave')
    assert_slave(wazo)
    stopped = wazo.node.run('/usr/sbin/xivo-manage-slave-services', 'stop', env=INSTALLED)
    assert stopped.returncode == 0, stopped.stderr
    assert wazo.node.services_state() == 'base' and wazo.disabled_at_boot()

    # slave to master: the promoted standby serves calls, and still after a reboot
    calls = len(wazo.node.stand_in_calls())
    result, steps = wazo.put_ha('master', PEER)
    assert result.returncode == 0, result.stderr
    assert steps == steps_for('master')
    assert_master(wazo)
    assert 'wazo-service enable' in wazo.node.stand_in_calls()[calls:]

    # disabled: no sentinel, no cron file, telephony running
    wazo.node.run('/usr/sbin/xivo-manage-slave-services', 'stop', env=INSTALLED)
    result, steps = wazo.put_ha('disabled')
    assert result.returncode == 0, result.stderr
    assert steps == steps_for('disabled')
    assert wazo.sentinels() == [] and wazo.cron_files() == [] and wazo.hba_ha_lines() == []
    assert wazo.node.services_state() == 'all' and not wazo.disabled_at_boot()

    # disabled to slave
    result, steps = wazo.put_ha('slave', PEER)
    assert result.returncode == 0, result.stderr
    assert_slave(wazo)


def test_a_failing_start_fails_the_request_before_the_sentinels(wazo):
    with open(os.path.join(wazo.node.root, 'stand-ins', 'wazo-service.rc'), 'w') as f:
        f.write('1')
    result, steps = wazo.put_ha('master', PEER)
    assert result.returncode == 1
    assert MANAGE_START in result.stderr
    assert steps[-1] == MANAGE_START, 'sentinels never written'
    assert wazo.sentinels() == []


@pytest.mark.parametrize('role, job, period', [
    ('master', '/usr/bin/wazo-sync', 'hour'),
    ('slave', '/usr/sbin/xivo-check-master-status', 'minute'),
])
def test_sysconfd_and_package_cron_files_start_each_job_once_per_period(wazo, role, job, period):
    result, _ = wazo.put_ha(role, PEER)
    assert result.returncode == 0, result.stderr
    theirs = [c for c in wazo.cron_commands(f'xivo-ha-{role}') if job in c]
    ours = [c for c in wazo.cron_commands('/etc/cron.d/wazo-ha') if job in c]
    assert len(theirs) == 1 and len(ours) == 1
    assert wazo.run_as_cron(theirs[0], ours[0]) == [0, 0]
    log = wazo.log()
    assert log.count(f'already started in this {period}') == 1, log
    # by hand, the job still runs
    again = wazo.node.run(job, env=INSTALLED)
    assert again.returncode == 0, again.stderr
