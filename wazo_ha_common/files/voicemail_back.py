"""On the master: bring the voicemail left on the slave back into the spool, message by message.

The slave's spool is first copied (rsync, by the caller's `fetch`) into a private staging
directory (mode 0700 under [paths] state_dir, a random name), without links, devices or
owners. voicemail.plan decides where each message goes; this module applies it in the
master's spool, a directory tree the `asterisk` user owns, so it never follows a link there:
every directory is opened component by component with O_NOFOLLOW, every file is created
with O_EXCL|O_NOFOLLOW relative to its directory, owned by that directory's owner and group,
without set-uid, set-gid or execute bits, and linked to its final name (a name that exists
is never replaced: the message takes the next number). A folder is locked the way Asterisk
locks it (vm_lock_path: a `.lock` hard link, given up after 5 s), so a message Asterisk
records meanwhile keeps its number.

Which messages were brought back is kept per mailbox in [paths] state_dir
(failback-voicemail.json), written after each message: a second run, a run cut short and
resumed, or the next episode brings nothing twice, and a message deleted on the master does
not return.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from ..decisions import voicemail
from ..decisions.failback import landing
from ..errors import WazoHaError
from ..settings import Settings
from ..adapters.system import read_state, send_mail, write_state

logger = logging.getLogger('wazo-ha')

RECORD_FILE = 'failback-voicemail.json'
TEMP_PREFIX = '.wazo-ha-failback-'
LOCK_WAIT = 5.0        # seconds, as Asterisk's ast_lock_path
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class VoicemailError(WazoHaError):
    """A message could not be brought back: the episode is tried again at the next run."""


def load_record(settings: Settings) -> dict[str, set[str]]:
    data = read_state(settings.paths.state_dir, RECORD_FILE).get('mailboxes', {})
    if not isinstance(data, dict):
        return {}
    return {mb: {i for i in ids if isinstance(i, str)} for mb, ids in data.items()
            if isinstance(mb, str) and isinstance(ids, list)}


def save_record(settings: Settings, record: dict[str, set[str]]) -> None:
    write_state(settings.paths.state_dir, RECORD_FILE,
                {'mailboxes': {mb: sorted(ids) for mb, ids in sorted(record.items()) if ids},
                 'written_at': time.time()})


def bring_back(settings: Settings, spool: str, fetch: Callable[[str], None],
               since: float | None = None, size: Callable[[], int] | None = None) -> list[str]:
    """Stage the slave's spool with fetch(directory), merge its messages, copy its greetings
    (newer wins, the other kept beside it). `since`: the start of the episode the slave served
    (None: a run by hand, the whole spool); older messages and files stay on the slave.
    `size()`: the bytes fetch would stage; over [sync] voicemail_stage_max_mb nothing is
    staged (logged, mailed once). Returns the paths written on this master."""
    if size is not None and _too_big(settings, size(), spool):
        return []
    os.makedirs(settings.paths.state_dir, mode=0o700, exist_ok=True)
    staging = tempfile.mkdtemp(prefix='failback-voicemail-', dir=settings.paths.state_dir)
    try:
        fetch(staging)
        messages, others, refused_names = scan_staging(staging)
        for relative in refused_names:
            logger.warning('failback: %s on the slave is not a voicemail message: not brought '
                           'back', relative)
        record = load_record(settings)
        written: list[str] = []
        stamp = time.strftime('%Y%m%d%H%M%S')
        refused: list[str] = []
        os.makedirs(spool, exist_ok=True)
        with _open_dir(spool) as spool_fd:
            _sweep(spool_fd, {m.folder for m in messages}
                   | {r.rsplit('/', 1)[0] for r in others if '/' in r})
            _resume_pending(settings, spool_fd)
            folders, ids = _scan_master(spool_fd, messages)
            decided = voicemail.plan(messages, folders, ids, record, since,
                                     _limits(settings.sync.voicemail_conf))
            for m in decided.here + decided.before:  # remembered now: never placed later
                record.setdefault(m.mailbox, set()).add(m.identity)
            save_record(settings, record)
            for placement in decided.place:
                m = placement.message
                try:
                    number = _place(spool_fd, staging, placement,
                                    lambda n, m=m: _save_pending(settings, m, n))
                except OSError as e:  # _place undid its links
                    _save_pending(settings, None, None)
                    refused.append(f'{m.folder}/{voicemail.file_name(m.number, "txt")}: {e}')
                    continue
                record.setdefault(m.mailbox, set()).add(m.identity)
                save_record(settings, record)
                _save_pending(settings, None, None)
                written += [os.path.join(spool, m.folder, f) for f in m.files(number)]
            for relative in others:
                try:
                    done = _copy_other(spool_fd, staging, relative, stamp, since)
                except OSError as e:
                    refused.append(f'{relative}: {e}')
                    continue
                if done:
                    written.append(os.path.join(spool, relative))
        if refused:
            raise VoicemailError(f'{len(refused)} voicemail files could not be brought back '
                                 f'into {spool}: {"; ".join(refused[:3])}')
        for mailbox, known in decided.known().items():  # only added to, never replaced
            record.setdefault(mailbox, set()).update(known)
        save_record(settings, record)
        logger.info('failback: %s into %s', decided.sentence(), spool)
        for m in decided.full:
            logger.error('failback: %s/%s left on the slave: the folder is full on this '
                         'master (maxmsg of %s)', m.folder, voicemail.file_name(m.number, 'txt'),
                         settings.sync.voicemail_conf)
        _mail_full_once(settings, decided.full, spool)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)


TOO_BIG_FILE = 'failback-voicemail-too-big.json'
TOO_BIG_SUBJECT = 'wazo-ha: voicemail left on the slave (too big to stage)'


def _too_big(settings: Settings, total: int, spool: str) -> bool:
    """Over the staging cap: said in the log at every run, mailed once while it lasts."""
    said = voicemail.over_stage_cap(total, settings.sync.voicemail_stage_max_mb)
    mailed = read_state(settings.paths.state_dir, TOO_BIG_FILE).get('mailed')
    if said is None:
        if mailed:
            write_state(settings.paths.state_dir, TOO_BIG_FILE, {})
        return False
    logger.error('failback: %s', said)
    if not mailed:
        send_mail(settings.mail.sendmail, settings.mail.recipient, TOO_BIG_SUBJECT,
                  f'{said}.\n\nNothing of it was copied into {spool}. Free room on this master '
                  'and raise voicemail_stage_max_mb in /etc/wazo-ha/conf.d/, then run '
                  f'wazo-sync --failback.\n\nSee {settings.paths.log_file}.\n')
        write_state(settings.paths.state_dir, TOO_BIG_FILE, {'mailed': True})
    return True


PENDING_FILE = 'failback-voicemail-pending.json'


def _save_pending(settings: Settings, m: voicemail.Message | None, number: int | None) -> None:
    """Before a message is linked at `number`: where, so that a run killed between its sound
    files and its .txt is cleaned at the next run ({} once placed or undone)."""
    write_state(settings.paths.state_dir, PENDING_FILE, {} if m is None else {
        'folder': m.folder, 'number': number, 'extensions': list(m.extensions)})


def _resume_pending(settings: Settings, spool_fd: int) -> None:
    """A run killed while linking a message: the sound files it linked without their .txt
    (Asterisk never shows them, and they would take the number) are removed, under the
    folder's lock; a message whose .txt is there is complete and kept."""
    pending = read_state(settings.paths.state_dir, PENDING_FILE)
    folder, number, extensions = (pending.get('folder'), pending.get('number'),
                                  pending.get('extensions'))
    if not (isinstance(folder, str) and isinstance(number, int) and isinstance(extensions, list)
            and all(isinstance(e, str) and voicemail.message_file(voicemail.file_name(0, e))
                    for e in extensions) and 0 <= number < voicemail.MAX_MESSAGES):
        _save_pending(settings, None, None)
        return
    try:
        with _walk_to(spool_fd, tuple(folder.split('/')), create=False) as fd:
            if fd is not None:
                with asterisk_lock(fd):
                    try:
                        os.stat(voicemail.file_name(number, 'txt'), dir_fd=fd,
                                follow_symlinks=False)
                    except FileNotFoundError:
                        stale = [voicemail.file_name(number, e) for e in extensions if e != 'txt']
                        _unlink_all(fd, stale)
                        logger.warning('failback: removed the sound files of %s/msg%04d left '
                                       'without their .txt by an interrupted run', folder, number)
    except OSError as e:
        logger.warning('failback: cannot clean %s after an interrupted run: %s', folder, e)
        return
    _save_pending(settings, None, None)


FULL_FILE = 'failback-voicemail-full.json'
FULL_SUBJECT = 'wazo-ha: voicemail left on the slave'


def _limits(path: str) -> voicemail.Limits | None:
    """maxmsg from the master's voicemail.conf; None when it is missing."""
    try:
        with open(path, encoding='utf-8', errors='replace') as f:
            return voicemail.limits(f.read())
    except FileNotFoundError:
        return None


def _mail_full_once(settings: Settings, full: list[voicemail.Message], spool: str) -> None:
    """Root is mailed once about the messages that did not fit (not at every run)."""
    mailed = set(read_state(settings.paths.state_dir, FULL_FILE).get('mailed', []))
    new = [m for m in full if f'{m.mailbox}|{m.identity}' not in mailed]
    if not new:
        return
    send_mail(settings.mail.sendmail, settings.mail.recipient, FULL_SUBJECT,
              f'{len(new)} voicemail messages left on the slave could not be brought back into '
              f'{spool}: their folder is full on this master (maxmsg in '
              f'{settings.sync.voicemail_conf}): '
              + ', '.join(f'{m.folder}/{voicemail.file_name(m.number, "txt")}' for m in new[:20])
              + '.\nThey stay on the slave; free room (or raise maxmsg) and run wazo-sync '
              f'--failback.\n\nSee {settings.paths.log_file}.\n')
    write_state(settings.paths.state_dir, FULL_FILE,
                {'mailed': sorted(mailed | {f'{m.mailbox}|{m.identity}' for m in new})})


def scan_staging(staging: str) -> tuple[list[voicemail.Message], list[str], list[str]]:
    """The slave's messages (complete: a .txt and its sound files), its other files, and
    the files refused (in a folder but not a message file)."""
    messages, others, refused = [], [], []
    for top, dirs, files in os.walk(staging):
        dirs.sort()
        relative = os.path.relpath(top, staging)
        parts = () if relative == '.' else tuple(relative.split(os.sep))
        groups: dict[int, list[str]] = {}
        for name in sorted(files):
            kind = voicemail.relative_kind(parts + (name,))
            if kind == 'other':
                others.append('/'.join(parts + (name,)))
            elif kind == 'refuse':
                refused.append('/'.join(parts + (name,)))
            elif kind == 'message':
                number, extension = voicemail.message_file(name)
                groups.setdefault(number, []).append(extension)
        for number, extensions in groups.items():
            if 'txt' not in extensions:  # sound without its .txt: not a message Asterisk shows
                logger.warning('failback: %s/msg%04d has no .txt on the slave: not brought '
                               'back', relative, number)
                continue
            txt = os.path.join(top, voicemail.file_name(number, 'txt'))
            with open(txt, encoding='utf-8', errors='surrogateescape') as f:
                text = f.read()
            # a .txt without origtime: the time the slave wrote it (the staging keeps times)
            recorded = voicemail.origtime(text) or int(os.stat(txt).st_mtime)
            ordered = tuple(sorted(e for e in extensions if e != 'txt')) + ('txt',)
            messages.append(voicemail.Message('/'.join(parts), number, ordered,
                                              voicemail.identity(text), recorded))
    return messages, others, refused


STALE = 60.0   # seconds: a .lock or temporary file of ours older than this is from a killed run


def _sweep(spool_fd: int, folders: set[str]) -> None:
    """Before planning: what a run killed midway left in the destination folders, our
    stale `.lock` (root's, older than STALE: Asterisk could never lock the folder again) and
    our temporary files."""
    for folder in sorted(folders):
        try:
            _sweep_folder(spool_fd, folder)
        except OSError as e:  # a link or a file in its place: its placing fails and says so
            logger.warning('failback: cannot sweep %s: %s', folder, e)


def _sweep_folder(spool_fd: int, folder: str) -> None:
    with _walk_to(spool_fd, tuple(folder.split('/')), create=False) as fd:
        if fd is None:
            return
        _drop_own_stale_lock(fd)
        for name in os.listdir(fd):
            if not name.startswith(TEMP_PREFIX):
                continue
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if (st.st_uid == os.geteuid() and stat.S_ISREG(st.st_mode)
                    and time.time() - st.st_mtime > STALE):
                os.unlink(name, dir_fd=fd)
                logger.warning('failback: removed %s/%s left by an interrupted run',
                               folder, name)


@contextmanager
def _open_dir(path: str, dir_fd: int | None = None) -> Iterator[int]:
    fd = os.open(path, _DIR, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _walk_to(spool_fd: int, parts: tuple[str, ...], create: bool) -> Iterator[int | None]:
    """The directory spool/parts, opened without following any link; created (owned like its
    parent) when `create`, else None when missing."""
    fds = []
    try:
        fd = spool_fd
        for part in parts:
            if part in ('', '.', '..') or '/' in part:
                raise OSError(errno.EINVAL, f'not a directory name: {part!r}')
            try:
                child = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    yield None
                    return
                parent = os.fstat(fd)
                os.mkdir(part, 0o700, dir_fd=fd)
                child = os.open(part, _DIR, dir_fd=fd)
                os.fchown(child, parent.st_uid, parent.st_gid)
                os.fchmod(child, stat.S_IMODE(parent.st_mode) & 0o777)
            fds.append(child)
            fd = child
        yield fd
    finally:
        for fd in reversed(fds):
            os.close(fd)


def _scan_master(spool_fd: int, messages: list[voicemail.Message]):
    """What the master's folders hold (numbers) and which messages its mailboxes have."""
    folders: dict[str, voicemail.Folder] = {}
    ids: dict[str, set[str]] = {}
    for mailbox in sorted({m.mailbox for m in messages}):
        found = ids.setdefault(mailbox, set())
        with _walk_to(spool_fd, tuple(mailbox.split('/')), create=False) as box:
            if box is None:
                continue
            for folder in sorted(os.listdir(box)):
                try:
                    fd = os.open(folder, _DIR, dir_fd=box)
                except OSError:  # a file, or a link: not a folder of this mailbox
                    continue
                try:
                    numbers = set()
                    for name in os.listdir(fd):
                        parsed = voicemail.message_file(name)
                        if not parsed:
                            continue
                        numbers.add(parsed[0])
                        if parsed[1] == 'txt':
                            text = _read(fd, name)
                            if text is not None:
                                found.add(voicemail.identity(text))
                    folders[f'{mailbox}/{folder}'] = voicemail.Folder(frozenset(numbers))
                finally:
                    os.close(fd)
    return folders, ids


def _read(dir_fd: int, name: str) -> str | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK,
                     dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, 'rb') as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            return None
        return f.read(1 << 20).decode('utf-8', 'surrogateescape')


@contextmanager
def asterisk_lock(dir_fd: int) -> Iterator[None]:
    """Asterisk's lock of a voicemail directory (ast_lock_path, lockfile mode): a `.lock`
    hard link to a file of our own; given up after LOCK_WAIT seconds as Asterisk does."""
    _drop_own_stale_lock(dir_fd)
    mine = f'.lock-{secrets.token_hex(4)}'
    fd = os.open(mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                 dir_fd=dir_fd)
    os.close(fd)
    deadline = time.monotonic() + LOCK_WAIT
    try:
        while True:
            try:
                os.link(mine, '.lock', src_dir_fd=dir_fd, dst_dir_fd=dir_fd,
                        follow_symlinks=False)
                break
            except FileExistsError:
                if time.monotonic() > deadline:
                    raise OSError(errno.EBUSY, 'Asterisk holds the folder\'s .lock') from None
                time.sleep(0.05)
    finally:
        os.unlink(mine, dir_fd=dir_fd)
    try:
        yield
    finally:
        os.unlink('.lock', dir_fd=dir_fd)


def _drop_own_stale_lock(dir_fd: int) -> None:
    """A `.lock` of ours (root's) left by a run killed while it held it would keep Asterisk
    (not root) from ever locking the folder again: removed once older than a minute."""
    try:
        st = os.stat('.lock', dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if st.st_uid == os.geteuid() and stat.S_ISREG(st.st_mode) and time.time() - st.st_mtime > STALE:
        os.unlink('.lock', dir_fd=dir_fd)
        logger.warning('failback: removed a stale .lock of an interrupted run')


def _staged_copy(dir_fd: int, source: str) -> str:
    """A copy of the staged file `source` under a temporary name in dir_fd, owned like the
    directory, its mode without set-uid, set-gid and execute bits, its time kept."""
    owner = os.fstat(dir_fd)
    st = os.stat(source, follow_symlinks=False)
    landed = landing(st.st_mode, owner.st_uid, owner.st_gid)  # the failback pull's one rule
    if not landed.keep or not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, f'{source} is not a regular file')
    name = TEMP_PREFIX + secrets.token_hex(8)
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        with open(source, 'rb') as src, os.fdopen(fd, 'wb', closefd=False) as dst:
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(fd)
        os.fchown(fd, landed.uid, landed.gid)
        os.fchmod(fd, landed.mode & 0o666)  # and no execute bit: sounds and texts
        os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
    except BaseException:
        os.unlink(name, dir_fd=dir_fd)
        raise
    finally:
        os.close(fd)
    return name


def _place(spool_fd: int, staging: str, placement: voicemail.Placement,
           before_link: Callable[[int], None] = lambda number: None) -> int:
    """A message's files at its number (the next one if Asterisk took it meanwhile), sound
    files first and the .txt last (Asterisk sees a message by its .txt). Returns the number."""
    m = placement.message
    source = os.path.join(staging, m.folder)
    with _walk_to(spool_fd, tuple(m.folder.split('/')), create=True) as fd:
        temps = {ext: _staged_copy(fd, os.path.join(source, voicemail.file_name(m.number, ext)))
                 for ext in m.extensions}
        try:
            with asterisk_lock(fd):
                number = placement.number
                while True:
                    linked = []
                    before_link(number)
                    try:
                        for ext in m.extensions:
                            final = voicemail.file_name(number, ext)
                            os.link(temps[ext], final, src_dir_fd=fd, dst_dir_fd=fd,
                                    follow_symlinks=False)
                            linked.append(final)
                        os.fsync(fd)  # the names are on disk before the record says so
                        return number
                    except FileExistsError:  # recorded meanwhile: the next number
                        _unlink_all(fd, linked)
                        number += 1
                        if number >= voicemail.MAX_MESSAGES:
                            raise OSError(errno.ENOSPC, 'the folder is full') from None
                    except BaseException:  # any other failure: no half message left behind
                        _unlink_all(fd, linked)
                        raise
        finally:
            for name in temps.values():
                os.unlink(name, dir_fd=fd)


def _unlink_all(dir_fd: int, names: list[str]) -> None:
    for name in names:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass


def _copy_other(spool_fd: int, staging: str, relative: str, stamp: str,
                since: float | None = None) -> bool:
    """A greeting (or any file but a message): copied when missing or newer on the slave; the
    master's older one is kept beside it (NAME.before-failback-DATE). True if written."""
    parts = relative.split('/')
    source = os.path.join(staging, relative)
    with _walk_to(spool_fd, tuple(parts[:-1]), create=True) as fd:
        name = parts[-1]
        try:
            here = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            here = None
        if here is not None and not stat.S_ISREG(here.st_mode):
            raise OSError(errno.EEXIST, f'{relative} on this master is not a regular file')
        step = voicemail.greeting_step(os.stat(source).st_mtime,
                                       here.st_mtime if here else None, since)
        if step == 'keep':
            return False
        temp = _staged_copy(fd, source)
        try:
            if step == 'replace':
                os.rename(name, f'{name}.before-failback-{stamp}', src_dir_fd=fd, dst_dir_fd=fd)
            os.link(temp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
        finally:
            os.unlink(temp, dir_fd=fd)
        return True
