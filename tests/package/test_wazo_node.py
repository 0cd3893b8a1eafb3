"""Installing on a Wazo node: xivo-config and xivo-sync own the HA commands already.

Stand-in .debs built here own the same paths; wazo-ha takes them over with dpkg-divert
and gives them back, byte for byte, when it is removed or purged."""

import os
import shutil
import subprocess

from package_helpers import XIVO_CONFIG_FILES, XIVO_SYNC_FILES, build_stand_in, digest, diversions, sh


def test_diverts_the_originals_and_gives_them_back_on_remove(wazo_node):
    deb, originals, _ = wazo_node
    result = sh('dpkg', '-i', deb)
    assert result.returncode == 0, result.stderr
    for path in originals:
        assert f'diversion of {path} to {path}.distrib by wazo-ha' in diversions()
        assert digest(f'{path}.distrib') == originals[path]
        ours = sh(path, '--help')
        assert ours.returncode == 0 and 'usage:' in ours.stdout, path
    assert sh('dpkg-query', '-W', 'xivo-config').returncode == 0, 'both stay installed'

    result = sh('dpkg', '-r', 'wazo-ha')
    assert result.returncode == 0, result.stderr
    assert diversions() == ''
    for path, checksum in originals.items():
        assert digest(path) == checksum, f'{path} not restored byte for byte'
        assert not os.path.exists(f'{path}.distrib')


def test_purge_restores_too_and_the_originals_stay_upgradable(wazo_node):
    deb, originals, tmp_path = wazo_node
    assert sh('dpkg', '-i', deb).returncode == 0
    # xivo-config is upgraded while wazo-ha holds its paths: its new files go aside
    newer = build_stand_in(tmp_path, 'xivo-config', '2.0', XIVO_CONFIG_FILES)
    result = sh('dpkg', '-i', newer)
    assert result.returncode == 0, result.stderr
    for path in XIVO_CONFIG_FILES:
        assert 'original' in open(f'{path}.distrib').read() and '2.0' in open(f'{path}.distrib').read()
        assert 'usage:' in sh(path, '--help').stdout, 'ours still in place'
    result = sh('dpkg', '--purge', 'wazo-ha')
    assert result.returncode == 0, result.stderr
    for path in XIVO_CONFIG_FILES:
        assert sh(path).stdout.strip() == f'original {os.path.basename(path)} 2.0'
    for path in XIVO_SYNC_FILES:
        assert digest(path) == originals[path]
    assert diversions() == ''
    assert sh('dpkg-query', '-W', 'xivo-sync').returncode == 0, 'xivo-sync still installed'


def test_two_cron_files_starting_the_same_job_in_the_same_minute_run_it_once(tmp_path, local):
    # cron is an ancestor of what it starts: a copy of sh named cron stands for it
    fake_cron = tmp_path / 'cron'
    shutil.copy('/bin/sh', fake_cron)
    local.run('wazo-ha-config', 'set', '--node-type', 'master', '--remote-address', '198.18.0.2')
    env = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'PYTHONPATH': os.getcwd(),
           'WAZO_HA_CONFIG': local.config}
    os.makedirs(os.path.join(local.root, 'etc-asterisk'), exist_ok=True)
    command = f'/usr/bin/python3 {os.getcwd()}/bin/wazo-sync'
    runs = [subprocess.Popen([str(fake_cron), '-c', command], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [r.communicate(timeout=60) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], outputs
    with open(local.log_file) as f:
        log = f.read()
    assert log.count('file synchronisation is not set up') == 1, log
    assert log.count('already started in this hour') == 1, log
    # by hand, the same job still runs
    by_hand = local.run('wazo-sync')
    assert by_hand.returncode == 0 and 'not set up' in by_hand.stdout


def cron_lines(path='/etc/cron.d/wazo-ha'):
    """The commands of a cron file's lines (after the five time fields and the user)."""
    with open(path) as f:
        return [line.split(None, 6)[6].strip() for line in f
                if line.strip() and not line.startswith('#') and '=' not in line.split()[0]]


def test_removed_not_purged_every_cron_line_does_nothing(wazo_node):
    """`apt remove` keeps the conffile /etc/cron.d/wazo-ha while the originals come back: run
    every line as cron does (sh -c, cron's PATH), on a node with both sentinels: no output
    (cron would mail it), exit 0, the originals never started."""
    deb, _, _ = wazo_node
    assert sh('dpkg', '-i', deb).returncode == 0
    result = sh('dpkg', '-r', 'wazo-ha')
    assert result.returncode == 0, result.stderr
    assert os.path.exists('/etc/cron.d/wazo-ha'), 'the conffile stays after remove'
    made = []
    for sentinel in ('/var/lib/wazo/is-primary', '/var/lib/wazo/is-secondary'):
        if not os.path.exists(sentinel):
            os.makedirs(os.path.dirname(sentinel), exist_ok=True)
            open(sentinel, 'w').close()
            made.append(sentinel)
    try:
        lines = cron_lines()
        assert len(lines) == 6
        for line in lines:
            ran = sh('sh', '-c', line, env={'PATH': '/usr/local/sbin:/usr/local/bin:/usr/sbin:'
                                                    '/usr/bin:/sbin:/bin'})
            assert (ran.returncode, ran.stdout, ran.stderr) == (0, '', ''), line
    finally:
        for sentinel in made:
            os.unlink(sentinel)
        sh('dpkg', '--purge', 'wazo-ha')
