"""The package's cron file, line by line, run as cron runs it (`sh -c`, the file's PATH).

Its paths are moved under a temporary root, so that the lines can be run with the commands
present (installed) or absent (removed, not purged: the conffile stays, the paths hold Wazo's
originals again, or nothing)."""

import os
import subprocess

import pytest

from testbed import REPO

CRON_FILE = os.path.join(REPO, 'cron.d', 'wazo-ha')
OURS_ALONE = ('/usr/sbin/wazo-ha-config', '/usr/sbin/wazo-ha-stream', '/usr/sbin/wazo-ha-status')
ORIGINALS = ('/usr/sbin/xivo-master-slave-db-replication', '/usr/bin/wazo-sync',
             '/usr/sbin/xivo-check-master-status')
SENTINELS = ('/var/lib/wazo/is-primary', '/var/lib/wazo/is-secondary')


def cron_file():
    """(PATH of the file, the command of each line)."""
    env_path, commands = None, []
    with open(CRON_FILE) as f:
        for line in f:
            if not line.strip() or line.startswith('#'):
                continue
            if line.startswith('PATH='):
                env_path = line.strip().split('=', 1)[1]
                continue
            minute, hour, day, month, weekday, user, command = line.split(None, 6)
            assert user == 'root'
            commands.append(command.strip())
    return env_path, commands


def under(root, command):
    for path in OURS_ALONE + ORIGINALS + SENTINELS:
        command = command.replace(path, f'{root}{path}')
    return command


def put(root, path, text):
    full = f'{root}{path}'
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, 'w') as f:
        f.write(text)
    os.chmod(full, 0o755)


@pytest.fixture
def node(tmp_path):
    """A node where HA is on for both roles (both sentinels), so that only the package's own
    guard decides; every command a script that records its start and talks (cron would mail)."""
    root = str(tmp_path)
    record = tmp_path / 'started'
    for sentinel in SENTINELS:
        put(root, sentinel, '')
    for path in ORIGINALS:
        put(root, path, f'#!/bin/sh\necho "{path}" >> {record}\necho "original {path}"\n'
                        'echo "usage: needs an argument" >&2\nexit 1\n')
    return root, record


def run_every_line(root):
    env_path, commands = cron_file()
    assert env_path and len(commands) == 6
    return [(c, subprocess.run(['sh', '-c', under(root, c)], env={'PATH': env_path},
                               capture_output=True, text=True)) for c in commands]


def test_removed_not_purged_every_line_is_quiet_and_starts_nothing(node):
    root, record = node
    for command, ran in run_every_line(root):
        assert (ran.returncode, ran.stdout, ran.stderr) == (0, '', ''), command
    assert not record.exists(), record.read_text()


def test_installed_every_line_starts_its_command(node):
    root, record = node
    for path in OURS_ALONE:
        put(root, path, f'#!/bin/sh\necho "{path}" >> {record}\n')
    for path in ORIGINALS:  # ours, in place of the originals (the diversion)
        put(root, path, f'#!/bin/sh\necho "{path}" >> {record}\n')
    for command, ran in run_every_line(root):
        assert (ran.returncode, ran.stderr) == (0, ''), command
    started = record.read_text().split()
    # wazo-ha-config once: the converge line (its own test guards the others)
    assert sorted(started) == sorted(ORIGINALS + OURS_ALONE)


def test_without_the_sentinel_a_line_starts_nothing(node):
    root, record = node
    for path in OURS_ALONE + ORIGINALS:
        put(root, path, f'#!/bin/sh\necho "{path}" >> {record}\n')
    for sentinel in SENTINELS:
        os.unlink(f'{root}{sentinel}')
    for command, ran in run_every_line(root):
        assert (ran.returncode, ran.stdout, ran.stderr) == (0, '', ''), command
    # only the lines of every role: the converge (it reads ha.conf itself) and the
    # monitoring summary
    assert sorted(record.read_text().split()) == ['/usr/sbin/wazo-ha-config',
                                                  '/usr/sbin/wazo-ha-status']
