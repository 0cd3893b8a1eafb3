"""Side effects shared by every command: the subprocess runner, locks, mail, logging, files.

This is the only module that imports subprocess.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import logging.handlers
import os
import re
import secrets
import shlex
import shutil
import socket
import stat
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

from ..errors import CommandError, LockBusyError, WazoHaError

if TYPE_CHECKING:
    from ..settings import Settings

logger = logging.getLogger('wazo-ha')

OUTPUT_TAIL_LINES = 5


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str
    stderr: str


def describe(argv: Sequence[str]) -> str:
    return ' '.join(shlex.quote(a) for a in argv)


# control characters (C0 but the newline, DEL, C1) and the bidirectional overrides: what a
# peer's text (its PostgreSQL's error lines, its rsync's stderr) could use to rewrite a terminal
_CONTROL = re.compile('[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]')


def printable(text: str) -> str:
    """Text another machine wrote, fit for a terminal, a mail or a log: every control
    character but the newline shown as '?'."""
    return _CONTROL.sub('?', text)


def tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return printable(' | '.join(kept))


def run(argv: Sequence[str], *, timeout: float = 120, check: bool = True,
        input: str | None = None) -> Completed:
    """Run a program (never through a shell), log it, and turn failure into CommandError."""
    argv = tuple(str(a) for a in argv)
    shown = describe(argv)
    logger.debug('running: %s', shown)
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True,
                              timeout=timeout, errors='replace',
                              stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise CommandError(f'{argv[0]}: command not found (running: {shown})') from None
    except PermissionError:
        raise CommandError(f'{argv[0]}: permission denied (running: {shown})') from None
    except subprocess.TimeoutExpired:
        raise CommandError(f'{shown}: timed out after {timeout:g} s') from None
    duration = time.monotonic() - started
    result = Completed(proc.returncode, proc.stdout, proc.stderr)
    logger.debug('%s: exit %d in %.2f s', shown, proc.returncode, duration)
    if check and proc.returncode != 0:
        detail = tail(proc.stderr) or tail(proc.stdout) or 'no output'
        raise CommandError(f'{shown} failed with exit status {proc.returncode}: {detail}')
    return result


def find_program(name: str) -> str | None:
    """The path PATH gives for a program, None when it is not installed."""
    return shutil.which(name)


def private_dir(path: str) -> str:
    """A directory only this user can enter: created mode 0700; whatever else stands at that
    path (another user's directory, a symlink, a file: in a world-writable parent such as
    /run/lock anyone may create it first) is moved aside, never used."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _ in range(3):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid():
            if st.st_mode & 0o077:
                os.chmod(path, 0o700)
            return path
        aside = f'{path}.untrusted-{os.getpid()}-{time.time_ns()}'
        os.rename(path, aside)
        logger.warning('%s was not a private directory of uid %d (owner uid %d, mode %o): moved '
                       'to %s', path, os.geteuid(), st.st_uid, st.st_mode, aside)
    raise WazoHaError(f'{path}: cannot make it a private directory (replaced again and again)')


@contextlib.contextmanager
def single_instance(lock_dir: str, name: str, wait: float = 0) -> Iterator[str]:
    """Hold an exclusive flock on lock_dir/NAME.lock; LockBusyError if another run has it.

    lock_dir is private to this user and the lock file is never opened through a symlink, so
    another local user can neither hold our locks nor point them at a file of theirs."""
    path = os.path.join(private_dir(lock_dir), f'{name}.lock')
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    raise LockBusyError(
                        f'another {name} is running{holder} (lock {path}); '
                        'this run leaves without doing anything') from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.write(fd, f'{os.getpid()}\n'.encode())
        yield path
    finally:
        os.close(fd)


def _read_pid(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ''
    return f' (pid {pid})' if pid.isdigit() else ''


def write_atomic(path: str, content: str, mode: int = 0o644) -> None:
    """Write a file so that readers see the old or the new content, never a mix; its
    directory is made when missing. Whoever owns the directory (node exporter's textfile
    directory is another user's), no link is followed: see write_no_follow."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_no_follow(path, content, mode=mode)


def open_directory(directory: str) -> int:
    """A descriptor on `directory`, opened one component at a time: a symlink is followed only
    where it stands in a directory that root (or this user) alone may write; anywhere else
    (a directory another user owns, a world-writable one) it is refused with ELOOP/ENOTDIR."""
    euid = os.geteuid()
    fd = os.open('/', os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in os.path.abspath(directory).split('/')[1:]:
            if not part:
                continue
            st = os.fstat(fd)
            trusted = st.st_uid in (0, euid) and not st.st_mode & 0o022
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if trusted else os.O_NOFOLLOW)
            child = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


class ChangedMeanwhile(OSError):
    """write_no_follow: the file is no longer the text its new content was made from (another
    writer, wazo-sysconfd's sed -i, came in between): nothing written, make it again."""


_ANY = object()


def write_no_follow(path: str, content: str, *, mode: int,
                    owner: tuple[int, int] | None = None, expect=_ANY) -> None:
    """Write a file atomically in a directory another user may own (PostgreSQL's), following no
    link that user could plant: the directory is opened without following links it does not
    trust, the temporary file is created there (O_EXCL|O_NOFOLLOW, a random name), owned
    (`owner` = (uid, gid)) and given its mode through its descriptor, then renamed over `path`
    (a link standing there is replaced, never followed). `expect`: the text (None: no file)
    `content` was made from, read again just before the rename; another one raises
    ChangedMeanwhile and writes nothing. Raises OSError."""
    directory, name = os.path.split(os.path.abspath(path))
    dir_fd = open_directory(directory)
    try:
        tmp = f'.{name}.{secrets.token_hex(8)}'
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, 'w', encoding='utf-8') as f:
                f.write(content)
                f.flush()
                if owner is not None:
                    os.fchown(f.fileno(), *owner)
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            if expect is not _ANY and _read_at(dir_fd, name) != expect:
                raise ChangedMeanwhile(f'{path} changed while it was being written')
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read_at(dir_fd: int, name: str) -> str | None:
    """The text of `name` in the open directory, following no link; None when missing."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # a link: not the file we read
            return None
        raise
    with os.fdopen(fd, encoding='utf-8') as f:
        return f.read()


def make_directory_no_follow(path: str, mode: int, owner: tuple[int, int] | None = None) -> None:
    """Create the directory `path` (its parent must exist) without following a link, owned by
    `owner`; nothing when it exists."""
    parent, name = os.path.split(os.path.abspath(path))
    dir_fd = open_directory(parent)
    try:
        try:
            os.mkdir(name, mode, dir_fd=dir_fd)
        except FileExistsError:
            return
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     dir_fd=dir_fd)
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def unlink_no_follow(path: str) -> bool:
    """Remove the file `path` (a link itself, never what it points to) through a descriptor
    on its directory opened as open_directory does; whether it was there."""
    directory, name = os.path.split(path)
    try:
        dir_fd = open_directory(directory)
    except FileNotFoundError:
        return False
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(dir_fd)


def read_no_follow(path: str) -> str | None:
    """Content of a file in a directory another user may own, never through a link; None when
    missing; WazoHaError when a link or anything but a regular file stands there, or (in a
    directory another user owns) a file with more than one link: a hard link that user made
    to a file it may not read."""
    directory, name = os.path.split(os.path.abspath(path))
    try:
        dir_fd = open_directory(directory)
    except FileNotFoundError:
        return None
    try:
        theirs = os.fstat(dir_fd).st_uid not in (0, os.geteuid())
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno != errno.ELOOP:
            raise
        fd = None
    finally:
        os.close(dir_fd)
    if fd is not None:
        with os.fdopen(fd, encoding='utf-8') as f:
            st = os.fstat(f.fileno())
            if stat.S_ISREG(st.st_mode) and theirs and st.st_nlink > 1:
                raise WazoHaError(f'{path} has {st.st_nlink} links (hard links) in a directory '
                                  'another user owns: not read; put a file of its own there')
            if stat.S_ISREG(st.st_mode):
                return f.read()
    raise WazoHaError(f'{path} is a symbolic link or not a regular file: not followed; whoever '
                      'can write its directory put it there: put the real file back')


def lstat_or_none(path: str) -> os.stat_result | None:
    """The entry itself (a link is not followed), None when missing."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def read_text(path: str) -> str | None:
    """Content of a file, or None when it does not exist."""
    try:
        with open(path, encoding='utf-8') as f:
            return f.read()
    except FileNotFoundError:
        return None


def read_state(state_dir: str, name: str) -> dict:
    """One of the JSON state files the commands keep in state_dir; {} when it is missing or
    corrupt (said in the log): state files inform, they never stop a command."""
    path = os.path.join(state_dir, name)
    text = read_text(path)
    if not text:
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        logger.warning('%s is corrupt: ignored', path)
        return {}
    return data


def write_state(state_dir: str, name: str, data: dict) -> None:
    """Write a JSON state file atomically; a failure is logged, not raised."""
    path = os.path.join(state_dir, name)
    try:
        write_atomic(path, json.dumps(data, indent=1) + '\n')
    except OSError as e:
        logger.error('cannot record %s: %s', path, e)


def send_mail(sendmail: str, recipient: str, subject: str, body: str) -> None:
    """Mail a report through the local MTA; a failure to mail is logged, never raised."""
    from email.message import EmailMessage  # only when something failed: quicker start

    msg = EmailMessage()
    msg['To'] = recipient
    msg['From'] = f'wazo-ha <root@{socket.getfqdn()}>'
    msg['Subject'] = subject
    msg.set_content(body)
    try:
        run([sendmail, '-t', '-oi'], input=msg.as_string(), timeout=60)
    except WazoHaError as e:
        logger.error('could not mail %s: %s', recipient, e)


@dataclass(frozen=True)
class KeyStore:
    """Where a state record keeps the key of the last failure mailed (one of its fields)."""
    load: Callable[[], object]
    save: Callable[[object], None]


def mail_once(settings: Settings, key_store: KeyStore, key: object, subject: str,
              body: str) -> bool:
    """Mail root about a failure, unless the last mail was about the same one (`key`): once,
    not every run while it lasts. Whether a mail was sent."""
    if key_store.load() == key:
        return False
    key_store.save(key)
    send_mail(settings.mail.sendmail, settings.mail.recipient, subject, body)
    return True


def setup_logging(command: str, log_file: str, verbose: bool = False) -> None:
    """Log to the wazo-ha log file and to syslog; tolerate either being unavailable."""
    root = logging.getLogger('wazo-ha')
    root.handlers.clear()
    root.setLevel(logging.DEBUG)
    root.propagate = False
    fmt = logging.Formatter(f'%(asctime)s {command}[%(process)d] %(levelname)s: %(message)s')
    try:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        handler = logging.FileHandler(log_file, encoding='utf-8')
        handler.setFormatter(fmt)
        handler.setLevel(logging.DEBUG if verbose else logging.INFO)
        root.addHandler(handler)
    except OSError:
        pass
    if os.path.exists('/dev/log'):
        try:
            sys_handler = logging.handlers.SysLogHandler(
                address='/dev/log', facility=logging.handlers.SysLogHandler.LOG_DAEMON)
            sys_handler.setFormatter(logging.Formatter(f'{command}[%(process)d]: %(message)s'))
            sys_handler.setLevel(logging.INFO)
            root.addHandler(sys_handler)
        except OSError:
            pass
    if verbose:
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter('%(levelname)s: %(message)s'))
        console.setLevel(logging.DEBUG)
        root.addHandler(console)
