"""The package upgraded in place on an hourly pair: the previous .deb (commit a9487b7, when
hourly was the default) installed, a pair configured with it in hourly mode as its settings
left it (no [database] mode written) and replicating, then this .deb installed over it: the
replication keeps working with no action (continuous is now the default; until `wazo-sync -i`
and the master's PostgreSQL restart the master's hourly run copies).

The previous .deb is built once from a temporary checkout of that commit (`git worktree add`,
its own `make deb`: tests/package/debs.py, which make check runs beside the suite) and kept
under build/previous-deb/. The nodes run in their own namespaces
with their own PostgreSQL 15 clusters and sshd; the installed commands run (PYTHONPATH empty:
the package's module). `wazo-service` is the testbed's recording stand-in
(wazo-platform/wazo-service, bin/wazo-service)."""

import os
import shutil

import pytest

import debs
from datagen import installation_sql
from package_helpers import package_version, sh
from stream_helpers import create_user, users_named

INSTALLED = {'PYTHONPATH': ''}
ROOT_PASSWORD = 'upgrade-test-root'


@pytest.fixture(scope='session')
def previous_deb():
    return debs.previous_deb()


def installed(node, command, *args, **kwargs):
    path = shutil.which(command, path='/usr/sbin:/usr/bin')
    assert path, f'{command} is not installed'
    return node.run(path, *args, env={**INSTALLED, **kwargs.pop('env', {})}, **kwargs)


def ok(result):
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def hourly_settings_of_the_previous_version(node):
    """No [database] mode (the previous default, hourly); the slave's pairing runs the
    installed wazo-ha-config."""
    node.write_settings(database={'mode': None},
                        sync={'pair_command': '/usr/sbin/wazo-ha-config pair-receive'},
                        check={'probe_interval': '1', 'down_after': '3', 'up_after': '4',
                               'run_for': '6', 'probe_timeout': '1'})


def pair_with_installed_commands(master, slave):
    slave.set_root_password(ROOT_PASSWORD)
    slave.start_sshd()
    key = master.host_path('/root/.ssh/xivo_id_rsa')
    if not os.path.exists(key):
        made = sh('ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', 'wazo-ha-sync', '-f', key)
        assert made.returncode == 0, made.stderr
    return installed(master, 'wazo-sync', '-i', timeout=120,
                     env=master.password_answers(ROOT_PASSWORD))


def installed_version():
    return sh('dpkg-query', '-W', '-f=${Version}', 'wazo-ha').stdout


def test_an_hourly_pair_keeps_replicating_after_the_package_upgrade(previous_deb, deb, bed):
    if sh('dpkg-query', '-W', 'wazo-ha').returncode == 0:
        pytest.fail('wazo-ha is installed on this machine: the test would change it')
    first = sh('dpkg', '-i', previous_deb)
    assert first.returncode == 0, first.stdout + first.stderr
    try:
        master, slave = bed.add_node('master', 1), bed.add_node('slave', 2)
        for node in (master, slave):
            hourly_settings_of_the_previous_version(node)
        master.psql(installation_sql(users=5))
        ok(installed(slave, 'wazo-ha-config', 'set', '--node-type', 'slave',
                     '--remote-address', master.ip))
        ok(installed(master, 'wazo-ha-config', 'set', '--node-type', 'master',
                     '--remote-address', slave.ip))
        ok(pair_with_installed_commands(master, slave))
        create_user(master, 'BeforeUpgrade')
        out = ok(installed(master, 'xivo-master-slave-db-replication', slave.ip, timeout=600))
        assert out.startswith('replication to'), out
        assert users_named(slave, 'BeforeUpgrade')

        old = installed_version()
        assert sh('dpkg', '--compare-versions', package_version(), 'gt', old).returncode == 0, \
            f'this .deb ({package_version()}) must be newer than the previous one ({old})'
        upgrade = sh('dpkg', '-i', deb[0])
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        assert installed_version() == package_version()
        # a cron minute on each node (the check on the slave first), the new default in force
        ok(installed(slave, 'xivo-check-master-status'))
        for node in (master, slave):
            ok(installed(node, 'wazo-ha-config', 'converge'))
        create_user(master, 'AfterUpgrade')
        ok(installed(master, 'xivo-master-slave-db-replication', slave.ip, timeout=600))
        assert users_named(slave, 'AfterUpgrade'), 'the hourly copy carried it'
        status = installed(master, 'wazo-ha-status').stdout
        assert 'replication in force: hourly copies' in status, status
    finally:
        sh('dpkg', '--purge', 'wazo-ha')
