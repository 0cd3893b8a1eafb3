"""The .deb: built with `make deb`, lintian-clean of errors, installs and purges cleanly."""

import os

from package_helpers import sh

COMMANDS = ['/usr/sbin/xivo-master-slave-db-replication', '/usr/sbin/xivo-manage-slave-services',
            '/usr/sbin/xivo-check-master-status', '/usr/bin/wazo-sync', '/usr/sbin/wazo-ha-config',
            '/usr/sbin/wazo-ha-status']
OWNED = ['/etc/wazo-ha', '/var/lib/wazo-ha', '/var/log/wazo-ha.log', '/etc/cron.d/wazo-ha',
         '/etc/logrotate.d/wazo-ha']


def test_lintian_reports_no_error_nor_warning(deb):
    path, _ = deb
    result = sh('lintian', path)
    found = [line for line in result.stdout.splitlines() if line.startswith(('E:', 'W:'))]
    assert found == []


def test_package_declares_its_dependencies_and_conffiles(deb):
    path, _ = deb
    depends = sh('dpkg-deb', '-f', path, 'Depends').stdout
    for dep in ('python3-psycopg2', 'python3-requests', 'python3-netifaces', 'rsync',
                'openssh-client', 'postgresql-client', 'iputils-ping', 'cron'):
        assert dep in depends
    conffiles = sh('dpkg-deb', '-I', path, 'conffiles').stdout.split()
    assert '/etc/wazo-ha/config.ini' in conffiles
    assert '/etc/cron.d/wazo-ha' in conffiles


def test_install_run_help_and_purge(deb):
    path, _ = deb
    installed = sh('dpkg', '-i', path)
    try:
        assert installed.returncode == 0, installed.stderr
        for command in COMMANDS:
            result = sh(command, '--help', env={'PATH': '/usr/sbin:/usr/bin:/sbin:/bin'})
            assert result.returncode == 0, f'{command}: {result.stderr}'
            assert 'usage:' in result.stdout
            assert os.path.exists(f'/usr/share/man/man8/{os.path.basename(command)}.8.gz') or \
                os.path.exists(f'/usr/share/man/man1/{os.path.basename(command)}.1.gz')
        with open('/etc/cron.d/wazo-ha') as f:
            cron = f.read()
        assert '0 * * * * root test -e /var/lib/wazo/is-primary && /usr/sbin/xivo-master-slave-db-replication' in cron
        assert '* * * * * root test -e /var/lib/wazo/is-secondary && /usr/sbin/xivo-check-master-status' in cron
        # a run leaves a log and state behind; purge must remove them too
        status = sh('/usr/sbin/wazo-ha-status')
        assert status.returncode in (1, 2)
        assert os.path.exists('/var/log/wazo-ha.log')
    finally:
        purged = sh('dpkg', '--purge', 'wazo-ha')
    assert purged.returncode == 0, purged.stderr
    for path in OWNED + COMMANDS:
        assert not os.path.exists(path), f'{path} left after purge'
