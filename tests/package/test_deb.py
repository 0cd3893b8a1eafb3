"""The .deb: built with `make deb` through stdeb (which fails unless lintian finds neither error
nor warning, so every test here has a lintian-clean .deb), holds exactly the expected files,
installs and purges cleanly."""

import configparser
import gzip
import os
import shutil
import subprocess

from package_helpers import package_version, sh
from testbed import REPO
from wazo_ha_common import __version__
from wazo_ha_common.settings import TABLE

COMMANDS = ['/usr/sbin/xivo-master-slave-db-replication', '/usr/sbin/xivo-manage-slave-services',
            '/usr/sbin/xivo-check-master-status', '/usr/bin/wazo-sync', '/usr/sbin/wazo-ha-config',
            '/usr/sbin/wazo-ha-status', '/usr/sbin/wazo-ha-stream']
OWNED = ['/etc/wazo-ha', '/var/lib/wazo-ha', '/var/lib/wazo-ha-monitoring', '/var/log/wazo-ha.log', '/etc/cron.d/wazo-ha',
         '/etc/wazo-auth-keys/conf.d/wazo-ha.yml',
         '/etc/logrotate.d/wazo-ha']
# what postinst's converge writes for the host's cluster ([paths] postgresql_conf_dir's default)
# the host cluster's file that postinst's converge writes ([paths] postgresql_conf_dir)
HOST_PG_CONF = os.path.join(next(s.default for s in TABLE if (s.section, s.key) ==
                                 ('paths', 'postgresql_conf_dir')), 'conf.d', 'wazo-ha.conf')


MODULES = ['__init__', 'cli', 'converge', 'diagnosis', 'errors', 'hooks', 'jobs', 'monitoring',
           'pause', 'role', 'role_setup', 'schedule', 'settings', 'status'] + [
           f'access/{m}' for m in ('__init__', 'fail2ban', 'pairing', 'pg_access',
                                   'pg_files', 'stream_access')] + [
           f'adapters/{m}' for m in ('__init__', 'network', 'probes', 'system', 'wazo_api')] + [
           f'adapters/db/{m}' for m in ('__init__', 'catalog', 'logical', 'publishing', 'session',
                                        'table_copy')] + [
           f'decisions/{m}' for m in ('__init__', 'addresses', 'failback', 'health', 'origin',
                                      'pgpass', 'registrations', 'replication', 'rsync_modules',
                                      'schema', 'stream', 'tracking', 'voicemail')] + [
           f'failover/{m}' for m in ('__init__', 'check', 'master_origin', 'phones',
                                     'services')] + [
           f'files/{m}' for m in ('__init__', 'failback', 'landing', 'rsync_names', 'rsyncd',
                                  'sync', 'voicemail_back')] + [
           f'replication/{m}' for m in ('__init__', 'compare', 'job', 'nodes', 'origin', 'write')] + [
           f'stream/{m}' for m in ('__init__', 'connection', 'control', 'failover', 'handoff', 'job',
                                     'master', 'owner', 'publication', 'slots')]
PACKAGES = ['access', 'adapters', 'adapters/db', 'decisions', 'failover', 'files', 'replication', 'stream']
DIR, FILE, EXEC = 'drwxr-xr-x', '-rw-r--r--', '-rwxr-xr-x'
# every entry of the .deb (mode, path); the egg-info directory is the one dh_python3 has always
# installed for setup.py packages (the debhelper-built package had it too)
EXPECTED_FILES = sorted(
    [(DIR, d) for d in (
        '/', '/etc/', '/etc/cron.d/', '/etc/logrotate.d/', '/etc/wazo-auth-keys/',
        '/etc/wazo-auth-keys/conf.d/', '/etc/wazo-ha/', '/etc/wazo-ha/conf.d/',
        '/usr/', '/usr/bin/', '/usr/lib/', '/usr/lib/python3/', '/usr/lib/python3/dist-packages/',
        f'/usr/lib/python3/dist-packages/wazo_ha-{__version__}.egg-info/',
        '/usr/lib/python3/dist-packages/wazo_ha_common/', '/usr/lib/tmpfiles.d/',
        '/usr/sbin/',
        '/usr/share/',
        '/usr/share/doc/', '/usr/share/doc/wazo-ha/', '/usr/share/lintian/',
        '/usr/share/lintian/overrides/', '/usr/share/man/', '/usr/share/man/man1/',
        '/usr/share/man/man8/', '/var/', '/var/lib/', '/var/lib/wazo-ha/')]
    + [(FILE, f) for f in (
        '/etc/cron.d/wazo-ha', '/etc/logrotate.d/wazo-ha', '/etc/wazo-ha/config.ini',
        '/etc/wazo-auth-keys/conf.d/wazo-ha.yml',
        f'/usr/lib/python3/dist-packages/wazo_ha-{__version__}.egg-info/PKG-INFO',
        f'/usr/lib/python3/dist-packages/wazo_ha-{__version__}.egg-info/dependency_links.txt',
        f'/usr/lib/python3/dist-packages/wazo_ha-{__version__}.egg-info/top_level.txt',
        '/usr/share/doc/wazo-ha/changelog.Debian.gz', '/usr/share/doc/wazo-ha/copyright',
        '/usr/share/lintian/overrides/wazo-ha', '/usr/share/man/man1/wazo-sync.1.gz',
        '/usr/lib/tmpfiles.d/wazo-ha.conf')]
    + [(FILE, f'/usr/lib/python3/dist-packages/wazo_ha_common/{m}.py') for m in MODULES]
    + [(DIR, f'/usr/lib/python3/dist-packages/wazo_ha_common/{p}/') for p in PACKAGES]
    + [(FILE, f'/usr/share/man/man8/{os.path.basename(c)}.8.gz')
       for c in COMMANDS if c.startswith('/usr/sbin/')]
    + [(EXEC, c) for c in COMMANDS])
EXPECTED_FIELDS = {
    'Package': 'wazo-ha',
    'Architecture': 'all',
    'Section': 'net',
    'Depends': 'python3:any, python3-psycopg2, python3-requests, python3-netifaces, rsync, '
               'openssh-client, postgresql-client, iputils-ping, cron, adduser',
    'Recommends': 'default-mta | mail-transport-agent, logrotate',
}
EXPECTED_CONFFILES = ['/etc/cron.d/wazo-ha', '/etc/logrotate.d/wazo-ha',
                      '/etc/wazo-auth-keys/conf.d/wazo-ha.yml', '/etc/wazo-ha/config.ini']


def deb_entries(path):
    listing = sh('dpkg-deb', '--contents', path).stdout.splitlines()
    entries = []
    for line in listing:
        mode, owner, _size, _date, _time, name = line.split(None, 5)
        assert owner == 'root/root', line
        entries.append((mode, name[1:]))   # ./usr/... -> /usr/...
    return sorted(entries)


def test_the_deb_holds_exactly_the_expected_files_and_modes(deb):
    path, _ = deb
    assert deb_entries(path) == EXPECTED_FILES


def test_control_fields_and_conffiles_are_the_expected_ones(deb):
    path, _ = deb
    for field, value in EXPECTED_FIELDS.items():
        assert sh('dpkg-deb', '-f', path, field).stdout.strip() == value, field
    assert sh('dpkg-deb', '-f', path, 'Version').stdout.strip() == package_version()
    assert sorted(sh('dpkg-deb', '-I', path, 'conffiles').stdout.split()) == EXPECTED_CONFFILES
    for script in ('preinst', 'postinst', 'postrm'):
        assert sh('dpkg-deb', '-I', path, script).returncode == 0, f'{script} missing'
    assert 'dpkg-divert --package wazo-ha --add' in sh('dpkg-deb', '-I', path, 'preinst').stdout
    assert 'dpkg-divert --package wazo-ha --remove' in sh('dpkg-deb', '-I', path, 'postrm').stdout


def test_the_build_went_through_stdeb(deb):
    path, log = deb
    assert 'running bdist_deb' in log and 'running sdist_dsc' in log
    # nothing hand-written to build from: stdeb writes control, rules and changelog
    for name in ('control', 'rules', 'changelog'):
        assert not os.path.exists(os.path.join(REPO, 'debian', name)), f'debian/{name} in the tree'
    upstream = package_version().rsplit('-', 1)[0]
    generated = os.path.join(REPO, 'deb_dist', f'wazo-ha-{upstream}', 'debian')
    with open(os.path.join(generated, 'rules')) as f:
        assert 'This file was automatically generated by stdeb' in f.read()
    # the control stdeb wrote carries stdeb.cfg's fields
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(REPO, 'stdeb.cfg'))
    with open(os.path.join(generated, 'control')) as f:
        control = f.read()
    depends = ', '.join(d.strip() for d in cfg['wazo-ha']['depends3'].split(','))
    assert f'Depends: ${{misc:Depends}}, ${{python3:Depends}}, {depends}\n' in control
    assert f"Package: {cfg['wazo-ha']['package3']}\n" in control
    assert f"Section: {cfg['wazo-ha']['section']}\n" in control
    # and the package itself says so in its changelog
    extracted = subprocess.run(['dpkg-deb', '--fsys-tarfile', path], capture_output=True).stdout
    changelog = subprocess.run(['tar', '-xO', './usr/share/doc/wazo-ha/changelog.Debian.gz'],
                               input=extracted, capture_output=True).stdout
    assert b'automatically created by stdeb' in gzip.decompress(changelog)


def test_install_run_help_and_purge(deb):
    path, _ = deb
    # review of issue 25: settings directories made beforehand by someone else become root's
    made = not os.path.exists('/etc/wazo-ha')
    assert not os.path.exists(HOST_PG_CONF), f'{HOST_PG_CONF} is there before the install'
    try:
        os.makedirs('/etc/wazo-ha/conf.d', exist_ok=True)
        for directory in ('/etc/wazo-ha', '/etc/wazo-ha/conf.d'):
            os.chown(directory, 65534, 65534)
            os.chmod(directory, 0o777)
        installed = sh('dpkg', '-i', path)
        assert installed.returncode == 0, installed.stderr
        for directory in ('/etc/wazo-ha', '/etc/wazo-ha/conf.d'):
            st = os.stat(directory)
            assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o755, 0, 0), directory
        for command in COMMANDS:
            result = sh(command, '--help', env={'PATH': '/usr/sbin:/usr/bin:/sbin:/bin'})
            assert result.returncode == 0, f'{command}: {result.stderr}'
            assert 'usage:' in result.stdout
            assert os.path.exists(f'/usr/share/man/man8/{os.path.basename(command)}.8.gz') or \
                os.path.exists(f'/usr/share/man/man1/{os.path.basename(command)}.1.gz')
        with open('/etc/cron.d/wazo-ha') as f:
            cron = f.read()
        assert ('0 * * * * root if test -x /usr/sbin/wazo-ha-config && test -e /var/lib/wazo/is-primary; '
                'then /usr/sbin/xivo-master-slave-db-replication') in cron
        assert ('* * * * * root if test -x /usr/sbin/wazo-ha-config && test -e /var/lib/wazo/is-secondary; '
                'then /usr/sbin/xivo-check-master-status') in cron
        assert ('* * * * * root if test -x /usr/sbin/wazo-ha-config; then /usr/sbin/wazo-ha-config '
                'converge >/dev/null; fi') in cron
        # a run leaves a log and state behind; purge must remove them too
        status = sh('/usr/sbin/wazo-ha-status')
        assert status.returncode in (1, 2)
        assert os.path.exists('/var/log/wazo-ha.log')
        # postinst's converge: continuous mode's lines for the host's own cluster
        with open(HOST_PG_CONF) as f:
            assert 'wal_level = logical\n' in f.read()
    finally:
        purged = sh('dpkg', '--purge', 'wazo-ha')
        if made and os.path.exists('/etc/wazo-ha') and os.stat('/etc/wazo-ha').st_uid != 0:
            shutil.rmtree('/etc/wazo-ha')  # the install failed: nobody's directory goes
    assert purged.returncode == 0, purged.stderr
    for path in OWNED + COMMANDS + [HOST_PG_CONF]:
        assert not os.path.exists(path), f'{path} left after purge'
