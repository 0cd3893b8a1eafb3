"""Attack: a local user tries to block or hijack the HA jobs through their locks.

The locks live in [paths] lock_dir (/run/lock/wazo-ha), inside /run/lock, which every user
may write (mode 1777). Whoever creates the name first could hold a job's lock forever (no
failover) or point the lock file at a file of theirs. Here the user `nobody` gets there first,
in a 1777 directory like /run/lock; each time the command runs at once, sets its lock dir up
afresh (0700, root's), and leaves the attacker's entry aside, untouched."""

import os
import pathlib
import shutil
import stat
import subprocess
import tempfile
import time

import pytest

from testbed import flock_held

CONFIG_LOCK = 'wazo-ha-config.lock'


@pytest.fixture
def run_lock(local):
    base = pathlib.Path(tempfile.mkdtemp(prefix='wazo-ha-locks-'))  # nobody can reach it
    try:
        base.chmod(0o755)
        parent = base / 'run-lock'
        parent.mkdir()
        parent.chmod(0o1777)
        lock_dir = parent / 'wazo-ha'
        local.add_conf_d('locks.ini', f'[paths]\nlock_dir = {lock_dir}\n')
        yield parent, lock_dir
    finally:
        shutil.rmtree(base)


def assert_private_and_used(lock_dir):
    st = os.lstat(lock_dir)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o700
    lock = os.lstat(lock_dir / CONFIG_LOCK)
    assert stat.S_ISREG(lock.st_mode) and lock.st_uid == 0


def set_disabled(local):
    started = time.monotonic()
    result = local.run('wazo-ha-config', 'set', '--node-type', 'disabled', timeout=60)
    return result, time.monotonic() - started


def test_a_lock_dir_made_and_held_by_another_user_does_not_block_the_job(local, run_lock):
    parent, lock_dir = run_lock
    made = subprocess.run(['runuser', '-u', 'nobody', '--', 'sh', '-c',
                           f'mkdir -m 777 {lock_dir} && touch {lock_dir}/{CONFIG_LOCK}'])
    assert made.returncode == 0
    with flock_held(lock_dir / CONFIG_LOCK, prefix=('runuser', '-u', 'nobody', '--')):
        result, took = set_disabled(local)
        assert result.returncode == 0, result.stderr
        assert took < 20, 'the job did not wait for the attacker (its own wait is 30 s)'
    assert_private_and_used(lock_dir)
    aside = [p for p in os.listdir(parent) if p.startswith('wazo-ha.untrusted-')]
    assert len(aside) == 1 and os.stat(parent / aside[0]).st_uid != 0
    with open(local.log_file) as f:
        assert 'was not a private directory' in f.read()


@pytest.mark.parametrize('kind', ['symlink', 'file'])
def test_a_symlink_or_file_in_place_of_the_lock_dir_is_never_followed(local, run_lock, kind):
    parent, lock_dir = run_lock
    target = parent.parent / 'victim'
    target.mkdir()
    target.chmod(0o777)
    command = f'ln -s {target} {lock_dir}' if kind == 'symlink' else f'echo x > {lock_dir}'
    assert subprocess.run(['runuser', '-u', 'nobody', '--', 'sh', '-c', command]).returncode == 0
    result, _ = set_disabled(local)
    assert result.returncode == 0, result.stderr
    assert_private_and_used(lock_dir)
    assert os.listdir(target) == [], 'nothing written through the symlink'


def test_a_lock_dir_of_root_with_loose_permissions_is_closed(local, run_lock):
    _, lock_dir = run_lock
    lock_dir.mkdir(mode=0o777)
    lock_dir.chmod(0o777)
    result, _ = set_disabled(local)
    assert result.returncode == 0, result.stderr
    assert_private_and_used(lock_dir)
