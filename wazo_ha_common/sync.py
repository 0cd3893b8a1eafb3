"""wazo-sync: the master's telephony files to the slave over SSH (rsync), set up once by -i.

The key authorised on the slave is restricted: only from the master's address, no pty or
forwarding, and only rsync through rrsync, so a stolen key opens no shell there.
"""

from __future__ import annotations

import glob
import logging
import os
import socket
import time
from typing import Callable

from . import pg_access, role
from .errors import WazoHaError
from .jobs import SYNC, LastRun, save_last_run
from .settings import Settings
from .system import describe, read_text, run, single_instance, tail

logger = logging.getLogger('wazo-ha')

RRSYNC = '/usr/bin/rrsync'
KEY_COMMENT = 'wazo-ha-sync'

# run on the slave with the root password, once: appends the line read on stdin to
# root's authorized_keys unless that key is already there (no data in the command itself)
AUTHORIZE_SCRIPT = (
    'umask 077; mkdir -p "$HOME/.ssh" && f="$HOME/.ssh/authorized_keys" && touch "$f" && '
    'IFS= read -r line && key=$(printf "%s\\n" "$line" | tr " " "\\n" | grep -E "^AAAA" | head -n 1) && '
    '[ -n "$key" ] && { grep -qF -- "$key" "$f" && echo already || { printf "%s\\n" "$line" >> "$f" && echo added; }; }'
)


class SyncError(WazoHaError):
    """rsync or ssh failed."""


def master_config(settings: Settings) -> role.HaConfig:
    config = role.require_role(settings.paths.ha_conf, settings.paths.sentinel_dir,
                                   'master', 'file synchronisation')
    role.validate_peer(config.remote_address)  # never this node itself
    return config


def source_address(peer: str) -> str:
    """The local address this node uses to reach peer (a UDP connect sends nothing)."""
    family = socket.AF_INET6 if ':' in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((peer, 9))
        return s.getsockname()[0]


def restricted_line(public_key: str, master_ip: str) -> str:
    """The authorized_keys line: this master only, rsync only, nothing else."""
    fields = public_key.split()
    key = ' '.join(fields[:2])
    return f'from="{master_ip}",restrict,command="{RRSYNC} /" {key} {KEY_COMMENT}'


def expand_directories(patterns: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The directories the settings name on this node now (patterns expanded, in order,
    once each), and the entries that name none."""
    found, missing = [], []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if os.path.isdir(m)]
        if not matches:
            missing.append(pattern)
        found += [m for m in matches if m not in found]
    return found, missing


def remote(user: str, ip: str) -> str:
    return f'{user}@[{ip}]' if ':' in ip else f'{user}@{ip}'


def ssh_options(settings: Settings, batch: bool = True) -> list[str]:
    s = settings.sync
    known_hosts = os.path.join(os.path.dirname(s.ssh_key), 'known_hosts')
    opts = ['-p', str(s.ssh_port), '-o', f'ConnectTimeout={s.connect_timeout}',
            '-o', 'StrictHostKeyChecking=accept-new', '-o', f'UserKnownHostsFile={known_hosts}',
            '-o', 'ServerAliveInterval=15', '-o', 'ServerAliveCountMax=4']
    if batch:
        opts += ['-i', s.ssh_key, '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes',
                 '-o', 'IdentityAgent=none', '-o', 'PasswordAuthentication=no']
    else:
        opts += ['-o', 'PubkeyAuthentication=no', '-o', 'NumberOfPasswordPrompts=1',
                 '-o', 'PreferredAuthentications=password,keyboard-interactive']
    return opts


def rsync_shell(settings: Settings) -> str:
    return describe(['ssh', *ssh_options(settings)])


def setup(settings: Settings, tell: Callable[[str], None]) -> list[str]:
    """wazo-sync -i: make the key if needed, authorise it on the slave, check it works.

    Returns what was done; `tell` shows the one line the user needs before ssh asks for
    the slave's password."""
    config = master_config(settings)
    slave = config.remote_address
    key = settings.sync.ssh_key
    report = []
    with single_instance(settings.paths.lock_dir, SYNC.name):
        if os.path.exists(key):
            report.append(f'using the existing key {key}')
        else:
            os.makedirs(os.path.dirname(key), mode=0o700, exist_ok=True)
            run(['ssh-keygen', '-q', '-t', 'rsa', '-b', '4096', '-N', '', '-C', KEY_COMMENT,
                 '-f', key], timeout=120)
            report.append(f'created the key {key}')
        os.chmod(key, 0o600)
        os.chown(key, 0, 0)
        public = read_text(key + '.pub')
        if not public:
            raise SyncError(f'{key}.pub is missing: remove {key} and run wazo-sync -i again')
        line = restricted_line(public, source_address(slave))
        target = remote(settings.sync.remote_user, slave)
        pairing = pg_access.prepare_pairing(settings, slave)  # the database, same session
        tell(f"Authorising {key} on {target}: enter {settings.sync.remote_user}'s password "
             'on the slave when asked.')
        result = run(['ssh', *ssh_options(settings, batch=False), target,
                      pairing.remote_command(AUTHORIZE_SCRIPT, settings.database.name)],
                     input=line + '\n' + pairing.input, timeout=120, check=False)
        paired = pg_access.finish_pairing(settings, pairing, result)
        if result.returncode != 0:
            raise SyncError(f'could not authorise the key on {target} (ssh exit status '
                            f'{result.returncode}): {tail(result.stderr) or "no output"}')
        report.append('the key was already authorised on the slave' if 'already' in result.stdout
                      else f'authorised the key on {target} (rsync only, from {line.split(chr(34))[1]})')
        check = run(['rsync', '--list-only', '-e', rsync_shell(settings), f'{target}:/'],
                    timeout=settings.sync.connect_timeout + 60, check=False)
        if check.returncode != 0:
            raise SyncError(f'the key does not work on {target} (rsync exit status '
                            f'{check.returncode}): {tail(check.stderr) or "no output"}')
        report.append('checked: rsync with the key works')
        report += paired + [pg_access.check_pairing(settings, slave)]
    for line in report:
        logger.info('wazo-sync -i: %s', line)
    return report


def push(settings: Settings, dry_run: bool = False) -> str:
    """wazo-sync: rsync the directories to the slave. Returns the closing sentence."""
    config = master_config(settings)
    key = settings.sync.ssh_key
    if not os.path.exists(key):
        sentence = f'file synchronisation is not set up (no key {key}): run wazo-sync -i once'
        logger.info('%s', sentence)
        _save_state(settings, 'not set up', sentence)
        return sentence
    with single_instance(settings.paths.lock_dir, SYNC.name):
        existing, missing = expand_directories(settings.sync.directories)
        for pattern in missing:
            logger.info('skipped %s: not on this master', pattern)
        if not existing:
            return 'none of the synced directories exists on this master: nothing to send'
        target = remote(settings.sync.remote_user, config.remote_address)
        argv = ['rsync', '-aR', '--delete-after', '--itemize-changes', '-e', rsync_shell(settings)]
        if dry_run:
            argv.append('--dry-run')
        argv += [*existing, f'{target}:/']
        started = time.monotonic()
        result = run(argv, timeout=settings.sync.timeout, check=False)
        changes = [line for line in result.stdout.splitlines() if line.strip()]
        duration = time.monotonic() - started
        if result.returncode != 0:
            logger.error('rsync exit status %d; output:\n%s', result.returncode,
                         (result.stdout + result.stderr).strip())
            message = (f'sync to {target} failed: rsync exit status {result.returncode}: '
                       f'{tail(result.stderr, 2) or "no output"}')
            _save_state(settings, 'failed', message)
            raise SyncError(message)
        if dry_run:
            return '\n'.join(changes + [f'dry run: {len(changes)} changes would be made on {target}'])
        sentence = (f'synced {len(existing)} directories to {target}: {len(changes)} changes '
                    f'in {duration:.1f} s')
        logger.info('%s', sentence)
        _save_state(settings, 'ok', sentence)
        return sentence


def pull_back(settings: Settings) -> list[str]:
    """wazo-sync --failback: bring voicemail and recordings left on the slave to the master.

    Deletes nothing; a file newer on the master is kept; a file the slave replaces is kept
    beside it with a .before-failback-DATE suffix. Returns the files copied."""
    config = master_config(settings)
    if not os.path.exists(settings.sync.ssh_key):
        raise SyncError(f'no key {settings.sync.ssh_key}: run wazo-sync -i first')
    target = remote(settings.sync.remote_user, config.remote_address)
    stamp = time.strftime('%Y%m%d%H%M%S')
    copied = []
    with single_instance(settings.paths.lock_dir, SYNC.name):
        for directory in settings.sync.failback_directories:
            argv = ['rsync', '-aR', '--update', '--backup', f'--suffix=.before-failback-{stamp}',
                    '--out-format=%n', '-e', rsync_shell(settings), f'{target}:{directory}/', '/']
            result = run(argv, timeout=settings.sync.timeout, check=False)
            if result.returncode == 23 and 'No such file or directory' in result.stderr \
                    and '(2)' in result.stderr and not result.stdout.strip():
                logger.info('failback: %s does not exist on the slave', directory)
                continue
            if result.returncode != 0:
                raise SyncError(f'copying {directory} back from {target} failed: rsync exit '
                                f'status {result.returncode}: {tail(result.stderr, 2)}')
            copied += ['/' + n for n in result.stdout.splitlines() if n and not n.endswith('/')]
    logger.info('failback: %d files copied back from %s', len(copied), target)
    return copied


def _save_state(settings: Settings, result: str, sentence: str) -> None:
    save_last_run(settings.paths.state_dir, SYNC, LastRun(result, time.time(), sentence))
