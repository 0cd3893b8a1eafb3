"""wazo-sync: the master's telephony files to the slave over SSH (rsync), set up once by -i.

The key authorised on the slave is bound to the master's address and to one forced command,
an rsync daemon whose modules are the synced directories (write only) and the failback
directories (read only), each chrooted (see rsync_modules): with the key one can write those
directories and read those, and nothing else: no shell, no forwarding, no other path.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from typing import Callable, Iterator

from . import failback, landing, rsyncd, voicemail_back
from .. import role
from ..decisions import rsync_modules
from ..decisions.voicemail import listed_bytes
from ..decisions.failback import BRING_BACK, SERVING, Episode, plan as failback_step
from ..errors import WazoHaError
from ..jobs import SYNC, LastRun, save_last_run
from ..decisions.origin import ForeignMasterError, UnknownOriginError
from ..settings import Settings
from ..adapters.system import describe, printable, run, send_mail, single_instance, tail

logger = logging.getLogger('wazo-ha')

KEY_COMMENT = 'wazo-ha-sync'

# run on the slave with the root password, once: puts the line read on stdin in root's
# authorized_keys in place of every line holding the same key (Wazo's own unrestricted
# "XiVO HA" line on a migrated node, or an older line of ours); no data in the command itself
AUTHORIZE_SCRIPT = (
    'umask 077; mkdir -p "$HOME/.ssh" && f="$HOME/.ssh/authorized_keys" && touch "$f" && '
    'IFS= read -r line && key=$(printf "%s\\n" "$line" | tr " " "\\n" | grep -E "^AAAA" | head -n 1) && '
    '[ -n "$key" ] && n=$(grep -cF -- "$key" "$f" || true) && '
    'if [ "$n" = 1 ] && grep -qxF -- "$line" "$f"; then echo already; '
    'else t=$(mktemp "$f.XXXXXX") && { grep -vF -- "$key" "$f" || true; } > "$t" && '
    'printf "%s\\n" "$line" >> "$t" && mv -f "$t" "$f" && echo "replaced $n"; fi'
)


class SyncError(WazoHaError):
    """rsync or ssh failed."""


def restricted_line(public_key: str, master_ip: str, daemon_config: str) -> str:
    """The authorized_keys line: this master only, no pty or forwarding, and only the rsync
    daemon of daemon_config whatever command the client asks for."""
    key = ' '.join(public_key.split()[:2])
    return (f'from="{master_ip}",restrict,command="rsync --server --daemon '
            f'--config={daemon_config} ." {key} {KEY_COMMENT}')


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


def rsync_shell(settings: Settings, control: str | None = None) -> str:
    """The -e of rsync. `control`: the socket of an SSH connection shared by the sessions of
    one run (see serving_reader); the first session opens it."""
    shared = ['-o', 'ControlMaster=auto', '-o', f'ControlPath={control}',
              '-o', f'ControlPersist={settings.sync.shared_connection_idle}'] if control else []
    return describe(['ssh', *ssh_options(settings), *shared])


def failback_modules(settings: Settings) -> list[rsync_modules.Module]:
    """The read-only modules of the failback directories (not the record's)."""
    return [m for m in rsyncd.daemon_modules(settings) if not m.write and m.name != rsync_modules.RECORD]


def host_key_fingerprints(settings: Settings, ip: str) -> list[str]:
    """The slave's SSH host keys as ssh-keygen -l shows them (asked before any password)."""
    scan = run(['ssh-keyscan', '-T', str(settings.sync.connect_timeout), '-p',
                str(settings.sync.ssh_port), ip], timeout=settings.sync.connect_timeout + 10,
               check=False)
    if not scan.stdout.strip():
        raise SyncError(f'the slave {ip} does not answer on SSH port {settings.sync.ssh_port}: '
                        f'{tail(scan.stderr) or "no host key"}')
    shown = run(['ssh-keygen', '-l', '-f', '-'], input=scan.stdout, timeout=30)
    return [line for line in shown.stdout.splitlines() if line.strip()]


def check_key(settings: Settings, target: str) -> None:
    """A dry-run upload of nothing into the first write module: key, sshd and daemon work."""
    first = next(m for m in rsyncd.daemon_modules(settings) if m.write)
    empty = tempfile.mkdtemp(prefix='wazo-sync-check-')
    try:
        check = run(['rsync', '--dry-run', '-r', '-e', rsync_shell(settings), f'{empty}/',
                     f'{target}::{first.name}/'],
                    timeout=settings.sync.connect_timeout + 60, check=False)
    finally:
        os.rmdir(empty)
    if check.returncode != 0:
        raise SyncError(f'the key does not work on {target} (rsync exit status '
                        f'{check.returncode}): {tail(check.stderr) or "no output"}'
                        + (' - is the slave configured (wazo-ha-config set --node-type slave '
                           'on the slave)?' if 'config' in check.stderr.lower()
                           or 'unknown module' in check.stderr.lower() else ''))


def push(settings: Settings, dry_run: bool = False, replace: bool = False,
         check_origin: Callable[..., str | None] | None = None) -> str:
    """wazo-sync: rsync the directories to the slave. Returns the closing sentence.

    `check_origin(settings, slave, replace, by, dry_run)`: refuses a slave that copied from
    another master cluster (ForeignMasterError) or returns a sentence for the log; the command
    passes it down (it reads the slave's database: the replication's code)."""
    slave = role.resolve_peer(settings, None, 'master', 'file synchronisation')
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
        plan = rsync_modules.push_plan(rsyncd.daemon_modules(settings), os.path.isdir, glob.glob)
        if not plan:
            return 'none of the synced directories exists on this master: nothing to send'
        target = remote(settings.sync.remote_user, slave)
        started = time.monotonic()
        try:
            record = fetch_record(settings, target)
        except SyncError as e:
            _save_state(settings, 'failed', str(e))
            raise
        failback.remember_slave_record(settings, record)   # for the master's wazo-ha-status
        try:
            said = check_origin(settings, slave, replace, SYNC.name, dry_run) \
                if check_origin else None
        except ForeignMasterError as e:
            # an unknown origin says "nothing pushed" itself
            _save_state(settings, 'failed', str(e) if isinstance(e, UnknownOriginError)
                        else f'{e}; nothing pushed')
            raise
        if said:
            logger.warning('%s', said)
        step = failback_step(record, failback.last_brought_back(settings))
        if step == SERVING:
            sentence = (f'the slave {slave} serves telephony {record.describe()}: '
                        'nothing pushed (it would overwrite what it records); once it has '
                        'given telephony back, the next run brings its voicemail and '
                        'recordings back first')
            logger.info('%s', sentence)
            _save_state(settings, 'ok', sentence)
            return sentence
        before = ''
        if step == BRING_BACK and dry_run:
            before = (f'the slave served telephony {record.describe()}: a real run first copies '
                      'its voicemail and recordings back\n')
        elif step == BRING_BACK:
            try:
                copied = _copy_back(settings, target, since=record.started_at)
            except SyncError as e:  # nothing pushed: the slave's files must come back first
                _save_state(settings, 'failed', f'{e}; nothing pushed')
                raise SyncError(f'{e}; nothing pushed (the files left on the slave come back '
                                'first)') from None
            failback.brought_back(settings, record, len(copied))
            before = (f'brought back {len(copied)} files (voicemail, recordings) left on the '
                      f'slave, which served telephony {record.describe()}; then ')
            logger.info('failback episode %s: %d files copied back from %s: %s', record.episode,
                        len(copied), target, ', '.join(copied[:20]) or 'none')
            _announce_brought_back(settings, slave, record, len(copied))
        changes, failures = [], []
        for module, sources in plan:
            argv = ['rsync', *rsync_modules.TRANSFER_OPTIONS, '-R', '--delete-after',
                    '--itemize-changes', '-e', rsync_shell(settings)]
            if dry_run:
                argv.append('--dry-run')
            argv += [*sources, f'{target}::{module.name}/']
            result = run(argv, timeout=settings.sync.timeout, check=False)
            changes += [f'{module.path}: {line}' for line in result.stdout.splitlines()
                        if line.strip()]
            if result.returncode != 0:
                logger.error('rsync into %s exit status %d; output:\n%s', module.path,
                             result.returncode, printable((result.stdout + result.stderr).strip()))
                failures.append(f'{module.path}: rsync exit status {result.returncode}: '
                                f'{tail(result.stderr, 2) or "no output"}')
        duration = time.monotonic() - started
        if failures:
            message = f'sync to {target} failed: ' + '; '.join(failures)
            _save_state(settings, 'failed', message)
            raise SyncError(message)
        if dry_run:
            return before + '\n'.join(
                changes + [f'dry run: {len(changes)} changes would be made on {target}'])
        sentence = (f'{before}synced {len(existing)} directories to {target}: {len(changes)} '
                    f'changes in {duration:.1f} s')
        logger.info('%s', sentence)
        _save_state(settings, 'ok', sentence)
        return sentence


def _announce_brought_back(settings: Settings, slave: str, record: Episode,
                           files: int) -> None:
    """Root is mailed once per episode (failback.brought_back records it once)."""
    host = socket.gethostname()
    sentence = (f'master {host} brought back {files} files of voicemail and recordings from '
                f'the slave {slave}, which served telephony {record.describe()}')
    send_mail(settings.mail.sendmail, settings.mail.recipient, f'Failback done: {sentence}',
              f'{sentence}.\n\nVoicemail messages were merged into the master\'s folders at '
              'free numbers, once each; for the other files, a file newer on the master was '
              'kept, and a file replaced is kept beside it as NAME.before-failback-DATE. '
              'Nothing is left to do by hand.\n'
              f'See {settings.paths.log_file}.\n')


def pull_back(settings: Settings) -> list[str]:
    """wazo-sync --failback: bring voicemail and recordings left on the slave to the master.

    Deletes nothing; a file newer on the master is kept; a file the slave replaces is kept
    beside it with a .before-failback-DATE suffix. Returns the files copied."""
    slave = role.resolve_peer(settings, None, 'master', 'file synchronisation')
    if not os.path.exists(settings.sync.ssh_key):
        raise SyncError(f'no key {settings.sync.ssh_key}: run wazo-sync -i first')
    target = remote(settings.sync.remote_user, slave)
    with single_instance(settings.paths.lock_dir, SYNC.name):
        copied = _copy_back(settings, target)
    logger.info('failback: %d files copied back from %s', len(copied), target)
    return copied


# the pull takes the slave's files, never its say on owners, links or special files: without
# -o -g -l -D the files land as root's, then landing.settle_tree gives them their directory's owner
PULL_OPTIONS = ('-rpt', '--no-links', '--no-devices', '--no-specials', '--no-owner',
                '--no-group', '--chmod=ug-s')
COPIED = 'copied:'


def _copy_back(settings: Settings, target: str, since: float | None = None) -> list[str]:
    """`since`: the start of the episode the slave served: voicemail older than it stays on
    the slave (None, a run by hand: its whole spool)."""
    stamp = time.strftime('%Y%m%d%H%M%S')
    copied = []
    for module in failback_modules(settings):
        voicemail = os.path.normpath(settings.sync.voicemail_dir)
        if module.path == voicemail and module.patterns == ('',):  # merged, message by message
            try:
                copied += voicemail_back.bring_back(
                    settings, module.path,
                    lambda staging, m=module: _stage(settings, target, m, staging), since,
                    lambda m=module: _staged_size(settings, target, m))
            except (OSError, voicemail_back.VoicemailError) as e:
                raise SyncError(f'bringing voicemail back into {module.path}: {e}') from None
            continue
        os.makedirs(module.path, exist_ok=True)
        argv = ['rsync', *PULL_OPTIONS, '--update', '--backup',
                f'--suffix=.before-failback-{stamp}', f'--out-format={COPIED}%n',
                '-e', rsync_shell(settings), f'{target}::{module.name}/', f'{module.path}/']
        result = run(argv, timeout=settings.sync.timeout, check=False)
        names = [line[len(COPIED):] for line in result.stdout.splitlines()
                 if line.startswith(COPIED)]
        # what did land is settled even when rsync stopped half-way
        landing.settle_tree(module.path)
        if result.returncode != 0:
            raise SyncError(f'copying {module.path} back from {target} failed: rsync exit '
                            f'status {result.returncode}: {tail(result.stderr, 2)}')
        skipped = [line for line in result.stdout.splitlines() if 'skipping non-regular' in line]
        if skipped:
            logger.warning('failback: %d links or special files on the slave not brought back '
                           '(%s)', len(skipped), tail('\n'.join(skipped), 3))
        copied += [os.path.join(module.path, n) for n in names
                   if n and not n.endswith('/')]
    return copied


STAGE_EXCLUDES = ('--exclude=.lock*', '--exclude=/*/*/tmp/')


def _staged_size(settings: Settings, target: str, module: rsync_modules.Module) -> int:
    """The bytes _stage would copy (the daemon's listing, nothing copied)."""
    argv = ['rsync', '-r', '--list-only', '--no-h', *STAGE_EXCLUDES, '-e',
            rsync_shell(settings), f'{target}::{module.name}/']
    result = run(argv, timeout=settings.sync.timeout, check=False)
    if result.returncode != 0:
        raise SyncError(f'listing {module.path} on {target} failed: rsync exit status '
                        f'{result.returncode}: {tail(result.stderr, 2)}')
    try:
        return listed_bytes(result.stdout)
    except ValueError as e:
        raise SyncError(f'listing {module.path} on {target}: {e}') from None


def _stage(settings: Settings, target: str, module: rsync_modules.Module, staging: str) -> None:
    """The slave's module copied into the private staging directory: regular files and
    directories only (no links, devices, owners), set-uid/set-gid bits dropped, times kept;
    never Asterisk's lock files nor its recordings in progress."""
    argv = ['rsync', '-rtp', '--chmod=ug-s', *STAGE_EXCLUDES,
            '-e', rsync_shell(settings), f'{target}::{module.name}/', f'{staging}/']
    result = run(argv, timeout=settings.sync.timeout, check=False)
    if result.returncode != 0:
        raise SyncError(f'copying {module.path} back from {target} failed: rsync exit '
                        f'status {result.returncode}: {tail(result.stderr, 2)}')


SHARED_CONNECTION_PREFIX = 'wazo-ha-ssh-'


def _sweep_shared_connections(idle: int) -> None:
    """The directories a killed run left (its connection ended by itself `idle` seconds
    after its last read): this user's own, never followed through a link."""
    top = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(top) if n.startswith(SHARED_CONNECTION_PREFIX)]
    except OSError:
        return
    for name in names:
        path = os.path.join(top, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and \
                time.time() - st.st_mtime > idle + 60:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def serving_reader(settings: Settings) -> Iterator[Callable[[str], str | None]]:
    """slave_serving for the reads of one run (the replication's, before its copy and again
    right before its commit): they share one SSH connection, its control socket in a private
    directory, ended when the block ends. Each read is still a read of the record as it is
    then, through the same key and forced command. What killed runs left is swept at the first
    read: the replication reads under its instance lock (one node per host, one lock), so a
    second run, which the lock sends away, never sweeps the directory of a run under way."""
    control_dir = tempfile.mkdtemp(prefix=SHARED_CONNECTION_PREFIX)  # 0700: this user's only
    control = os.path.join(control_dir, 'ssh')
    targets = set()
    swept = []

    def serving(slave_ip: str) -> str | None:
        if not swept:
            _sweep_shared_connections(settings.sync.shared_connection_idle)
            swept.append(True)
        targets.add(remote(settings.sync.remote_user, slave_ip))
        return slave_serving(settings, slave_ip, control)
    try:
        yield serving
    finally:
        if os.path.exists(control):
            for target in targets:
                run(['ssh', '-o', f'ControlPath={control}', '-O', 'exit', target], timeout=30,
                    check=False)
        shutil.rmtree(control_dir, ignore_errors=True)


def slave_serving(settings: Settings, slave_ip: str, control: str | None = None) -> str | None:
    """Why the master's database copy must leave the slave alone now: it serves telephony
    (its failback record has an open episode), or its record cannot be read; None when it
    is on standby. `control`: see serving_reader."""
    if not os.path.exists(settings.sync.ssh_key):
        return (f'cannot tell whether it serves telephony (no key {settings.sync.ssh_key} to '
                'read its failback record: run wazo-sync -i)')
    try:
        record = fetch_record(settings, remote(settings.sync.remote_user, slave_ip), control)
    except SyncError as e:
        return f'cannot tell whether it serves telephony ({e})'
    if failback_step(record, None) == SERVING:
        return f'it serves telephony {record.describe()} (its failback record)'
    return None


RECORD_MAX_SIZE = 65536   # a record is a hundred bytes: a slave's bigger file is not fetched


def fetch_record(settings: Settings, target: str, control: str | None = None
                 ) -> Episode | None:
    """The slave's record of the telephony it served (read through its read-only module).
    `control`: the socket of a shared SSH connection (see serving_reader)."""
    scratch = tempfile.mkdtemp(prefix='wazo-sync-record-')
    try:
        result = run(['rsync', '-rt', f'--max-size={RECORD_MAX_SIZE}', '--info=skip1',
                      '--include', f'/{failback.RECORD_FILE}', '--exclude', '*',
                      '-e', rsync_shell(settings, control), f'{target}::{rsync_modules.RECORD}/',
                      f'{scratch}/'], timeout=settings.sync.connect_timeout + 60, check=False)
        if result.returncode != 0:
            logger.error('reading the failback record on %s: rsync exit status %d; output:\n%s',
                         target, result.returncode, printable((result.stdout + result.stderr).strip()))
            raise SyncError(f'cannot read the failback record on {target} (rsync exit status '
                            f'{result.returncode}): {tail(result.stderr) or "no output"}'
                            + (' - run wazo-ha-config set --node-type slave ... on the slave, '
                               'or upgrade it' if 'unknown module' in result.stderr else ''))
        try:
            if 'over max-size' in result.stdout:   # skipped: no proof the slave is on standby
                raise ValueError(f'larger than {RECORD_MAX_SIZE} bytes')
            return failback.read_record(os.path.join(scratch, failback.RECORD_FILE))
        except (OSError, ValueError) as e:
            raise SyncError(f'cannot tell whether {target} serves telephony: its failback '
                            f'record {settings.sync.record_dir}/{failback.RECORD_FILE} is not '
                            f'valid ({e}); it is rewritten at its next failover or failback, '
                            'or remove it on the slave if it serves no telephony') from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _save_state(settings: Settings, result: str, sentence: str) -> None:
    save_last_run(settings.paths.state_dir, SYNC, LastRun(result, time.time(), sentence))
