"""wazo-ha-config pause|resume: cron-started HA jobs held for an upgrade, runs by hand not."""

import fcntl
import os
import shutil
import subprocess
import time

from check_helpers import check

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def under_cron(fake_cron, node_env, command):
    """Start one of our commands the way cron does (a copy of sh named cron as its parent)."""
    return subprocess.run([str(fake_cron), '-c', f'/usr/bin/python3 {REPO}/bin/{command}'],
                          env=node_env, capture_output=True, text=True, timeout=120)


def fake_cron_in(directory):
    path = os.path.join(str(directory), 'cron')
    shutil.copy('/bin/sh', path)
    return path


def log_of(node):
    with open(node.log_file) as f:
        return f.read()


def test_pause_holds_cron_runs_only_and_resume_lets_them_run_again(tmp_path, local):
    fake_cron = fake_cron_in(tmp_path)
    env = {'PATH': '/usr/sbin:/usr/bin:/sbin:/bin', 'PYTHONPATH': REPO,
           'WAZO_HA_CONFIG': local.config}
    assert local.run('wazo-ha-config', 'set', '--node-type', 'master',
                     '--remote-address', '198.18.0.2').returncode == 0

    paused = local.run('wazo-ha-config', 'pause')
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith('paused: cron no longer starts the HA jobs')
    assert 'replicate by hand' in paused.stdout and 'wazo-ha-config resume' in paused.stdout
    again = local.run('wazo-ha-config', 'pause')
    since = paused.stdout.split('(')[1].split(')')[0]
    assert again.returncode == 0 and f'already paused since {since}' in again.stdout

    held = under_cron(fake_cron, env, 'wazo-sync')
    assert held.returncode == 0, held.stderr
    assert 'the HA cron jobs are paused' in log_of(local)
    assert 'file synchronisation is not set up' not in log_of(local), 'the job ran'

    by_hand = local.run('wazo-sync')
    assert by_hand.returncode == 0 and 'not set up' in by_hand.stdout, 'a run by hand is not held'

    resumed = local.run('wazo-ha-config', 'resume')
    assert resumed.returncode == 0 and resumed.stdout.startswith('resumed:'), resumed.stdout
    assert local.run('wazo-ha-config', 'resume').stdout.startswith('not paused')
    # the held cron start did not use up its hour: the next cron start runs
    ran = under_cron(fake_cron, env, 'wazo-sync')
    assert ran.returncode == 0, ran.stderr
    assert log_of(local).count('file synchronisation is not set up') == 2


def test_pause_waits_for_a_running_job_and_says_which(local):
    lock = os.path.join(local.root, 'lock', 'xivo-check-master-status.lock')
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    with open(lock, 'w') as held:  # a running check holds this lock
        fcntl.flock(held, fcntl.LOCK_EX)
        started = time.monotonic()
        result = local.run('wazo-ha-config', 'pause', '--wait', '1')
        waited = time.monotonic() - started
    assert result.returncode == 1
    assert 'still running after 1 s: xivo-check-master-status' in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert waited >= 1, 'it waited for the job'
    assert result.stdout.startswith('paused:'), 'the pause itself is in place'
    # once the job has ended, pause again says nothing runs any more
    result = local.run('wazo-ha-config', 'pause', '--wait', '0')
    assert result.returncode == 0 and 'no HA job is running' in result.stdout


def test_bad_wait_is_refused_and_changes_nothing(local):
    for value in ('-1', 'soon', '99999', '1;reboot'):
        result = local.run('wazo-ha-config', 'pause', '--wait', value)
        assert result.returncode == 2, value
        assert '--wait' in result.stderr
    assert not os.path.exists(os.path.join(local.root, 'state', 'cron-paused'))


def test_a_paused_slave_does_not_fail_over_from_cron(tmp_path, nodes):
    """The master dies during the upgrade window: cron's check leaves; after resume it acts."""
    master, slave = nodes
    fake_cron = os.path.join(slave.root, 'cron')
    shutil.copy('/bin/sh', fake_cron)
    assert slave.wazo('wazo-ha-config', 'pause').returncode == 0
    calls = slave.stand_in_calls()
    master.link(up=False)
    try:
        command = f'/usr/bin/python3 {REPO}/bin/xivo-check-master-status'
        for _ in range(2):
            held = slave.run(fake_cron, '-c', command)
            assert held.returncode == 0, held.stderr
        assert 'the HA cron jobs are paused' in log_of(slave)
        assert slave.stand_in_calls() == calls, 'nothing checked, nothing started'
        assert slave.wazo('wazo-ha-config', 'resume').returncode == 0
        result = check(slave, run_for=8)
        assert result.returncode == 0, result.stderr
        assert slave.services_state() == 'all', 'after resume, the failover happens'
    finally:
        master.link(up=True)
