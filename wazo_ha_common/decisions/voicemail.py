"""Bringing voicemail back from the slave: which message goes where. Pure: no I/O.

How Asterisk stores voicemail on files (read from Asterisk's apps/app_voicemail.c,
asterisk/asterisk: make_file, last_message_index, leave_voicemail, resequence_mailbox,
vm_lock_path): a mailbox is `<spool>/<context>/<mailbox>/`, with the greetings `unavail`,
`busy`, `greet` and `temp` at its root (one sound file per configured format) and one
directory per folder (INBOX, Old, Work, Family, Friends, Urgent, Cust1-5, Deleted; `tmp`
holds recordings in progress). A message is `msgNNNN.txt` (a `[message]` section:
origmailbox, context, exten, callerid, origdate, origtime, category, msg_id, flag,
duration...) plus `msgNNNN.<ext>` per format (`wav`, `WAV`, `gsm`...). NNNN is the message's
position in its folder: Asterisk numbers a new message one past the highest `msgNNNN.txt`
present (last_message_index) and closes gaps when a mailbox is opened; at most 9999 per
folder (MAXMSGLIMIT).

Both nodes number their messages independently, so a message left on the slave is never
copied by name: it lands in the master's same folder at the next free number, its files
together, its `.txt` unchanged. It is known by its `msg_id` with who left it and its duration
(Asterisk's msg_id is unique on one system only; for a message without one, by a digest of its
`.txt`), and brought back once: a message already in the master's mailbox
(any folder) or brought back by an earlier run or episode is left alone, so a message the
user deleted on the master does not come back.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

GREETINGS = ('unavail', 'busy', 'greet', 'temp')
IN_PROGRESS = 'tmp'         # a mailbox's folder of recordings in progress: never brought back
MAX_MESSAGES = 9999         # Asterisk's MAXMSGLIMIT: numbers 0000..9998
DEFAULT_MAXMSG = 100        # Asterisk's MAXMSG: messages per folder when maxmsg is not set
# the .txt and the sound formats Asterisk can record voicemail in (its formats' extensions)
EXTENSIONS = frozenset({'txt', 'wav', 'WAV', 'wav49', 'gsm', 'g722', 'g723', 'g726', 'g729',
                        'sln', 'sln16', 'raw', 'ulaw', 'ul', 'alaw', 'al', 'pcm', 'au', 'ogg',
                        'oga', 'siren7', 'siren14', 'speex', 'spx', 'vox', 'mp3', 'ilbc',
                        'h263', 'h264'})
_MESSAGE_FILE = re.compile(r'^msg(\d{4})\.([A-Za-z0-9]{1,8})$')
# Episode bound: a message counts as left during the episode when Asterisk stamped it no more
# than this before the episode's start: the slave's clock may lag the master's (NTP drift)
# and a call answered just before the failover is stamped when its recording began.
EPISODE_MARGIN = 300


def message_file(name: str) -> tuple[int, str] | None:
    """('msg0003.wav') -> (3, 'wav'); None for a file that is not part of a message."""
    match = _MESSAGE_FILE.match(name)
    if not match or int(match.group(1)) >= MAX_MESSAGES or match.group(2) not in EXTENSIONS:
        return None
    return int(match.group(1)), match.group(2)


def file_name(number: int, extension: str) -> str:
    return f'msg{number:04d}.{extension}'


def message_fields(text: str) -> dict[str, str]:
    """The `[message]` section of a msgNNNN.txt as key -> value (later keys win)."""
    fields: dict[str, str] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in ';#':
            continue
        if line.startswith('[') and line.endswith(']'):
            section = line[1:-1].strip()
        elif section == 'message' and '=' in line:
            key, value = line.split('=', 1)
            fields[key.strip()] = value.strip()
    return fields


# what tells two messages apart when their msg_id is the same: Asterisk's msg_id is the second
# it was made and a counter that restarts at 0 with Asterisk (generate_msg_id), unique on one
# system only: the slave's Asterisk, started at the failover, counts from 0 too
_TOLD_APART_BY = ('origmailbox', 'callerid', 'duration')


def identity(text: str) -> str:
    """What a message is known by on both nodes: Asterisk's msg_id with a digest of who left it
    and how long it is (two nodes may make the same msg_id), else the .txt's digest."""
    fields = message_fields(text)
    msg_id = fields.get('msg_id', '')
    if msg_id:
        told = '\0'.join(fields.get(name, '') for name in _TOLD_APART_BY)
        digest = hashlib.sha256(told.encode('utf-8', 'surrogateescape')).hexdigest()[:16]
        return f'msg_id:{msg_id}~{digest}'
    return 'sha256:' + hashlib.sha256(text.encode('utf-8', 'surrogateescape')).hexdigest()


def earlier_identity(identity_: str) -> str:
    """The identity an earlier version recorded for the same message (msg_id alone)."""
    return identity_.split('~', 1)[0]


def origtime(text: str) -> int:
    value = message_fields(text).get('origtime', '')
    return int(value) if value.isdigit() else 0


@dataclass(frozen=True)
class Limits:
    """voicemail.conf's maxmsg: messages a folder may hold, in [general] and per mailbox
    (`context/mailbox`). Without the file (None), only Asterisk's numbering limit."""
    general: int = DEFAULT_MAXMSG
    mailboxes: dict[str, int] = field(default_factory=dict)

    def of(self, mailbox: str) -> int:
        return self.mailboxes.get(mailbox, self.general)


def _maxmsg(value: str) -> int | None:
    value = value.strip()
    return min(int(value), MAX_MESSAGES) if value.isdigit() and int(value) > 0 else None


def limits(text: str) -> Limits:
    """maxmsg from a voicemail.conf (as app_voicemail.c reads it: `maxmsg=` in [general];
    per mailbox, `mailbox => password,name,email,pager,options` with options `key=value`
    separated by `|`). Values not a positive number are ignored."""
    general, mailboxes, section = DEFAULT_MAXMSG, {}, None
    for raw in text.splitlines():
        line = raw.split(';', 1)[0].strip()
        if not line:
            continue
        if line.startswith('[') and line.endswith(']'):
            section = line[1:-1].strip()
        elif section == 'general' and '=' in line:
            key, value = line.split('=', 1)
            if key.strip() == 'maxmsg' and _maxmsg(value) is not None:
                general = _maxmsg(value)
        elif section not in (None, 'general', 'zonemessages') and '=>' in line:
            box, value = line.split('=>', 1)
            fields = value.split(',', 4)
            for option in (fields[4].split('|') if len(fields) == 5 else ()):
                key, _, v = option.partition('=')
                if key.strip() == 'maxmsg' and _maxmsg(v) is not None:
                    mailboxes[f'{section}/{box.strip()}'] = _maxmsg(v)
    return Limits(general, mailboxes)


@dataclass(frozen=True)
class Message:
    """One message on the slave: `folder` is `context/mailbox/folder`, relative to the spool."""
    folder: str
    number: int
    extensions: tuple[str, ...]   # 'txt' and one per sound format
    identity: str
    origtime: int = 0

    @property
    def mailbox(self) -> str:
        return self.folder.rsplit('/', 1)[0]

    def files(self, number: int | None = None) -> list[str]:
        n = self.number if number is None else number
        return [file_name(n, ext) for ext in self.extensions]


@dataclass(frozen=True)
class Placement:
    message: Message
    number: int                   # its number in the master's folder of the same name


@dataclass(frozen=True)
class Folder:
    """What the master's folder holds now: the numbers of its message files, any extension
    (a number taken by a sound file alone is not free either)."""
    numbers: frozenset[int] = frozenset()

    def next_free(self, taken: set[int] = frozenset()) -> int | None:
        """Asterisk's rule: one past the highest message; None when the folder is full."""
        highest = max(self.numbers | taken, default=-1)
        return highest + 1 if highest + 1 < MAX_MESSAGES else None


@dataclass
class Plan:
    place: list[Placement] = field(default_factory=list)
    here: list[Message] = field(default_factory=list)      # already in the master's mailbox
    before: list[Message] = field(default_factory=list)    # brought back earlier (deleted since?)
    full: list[Message] = field(default_factory=list)      # no number left in the folder
    older: list[Message] = field(default_factory=list)     # recorded before the episode

    def known(self) -> dict[str, set[str]]:
        """mailbox -> identities the master has now seen (placed, here or before)."""
        out: dict[str, set[str]] = {}
        for m in [p.message for p in self.place] + self.here + self.before:
            out.setdefault(m.mailbox, set()).add(m.identity)
        return out

    def sentence(self) -> str:
        return (f'{len(self.place)} voicemail messages brought back, {len(self.here)} already '
                f'on this master, {len(self.before)} brought back before'
                + (f', {len(self.full)} left on the slave (folder full)' if self.full else '')
                + (f', {len(self.older)} older than the episode left on the slave'
                   if self.older else ''))


def plan(slave: list[Message], master: dict[str, Folder], master_ids: dict[str, set[str]],
         brought_back: dict[str, set[str]], since: float | None = None,
         caps: Limits | None = None) -> Plan:
    """Where each of the slave's messages goes on the master.

    master: folder -> what it holds; master_ids: mailbox -> identities of its messages now;
    brought_back: mailbox -> identities brought back by earlier runs. Messages of a folder are
    placed in the order they were recorded (origtime, then the slave's number). `since`: the
    episode's start; a message recorded more than EPISODE_MARGIN before it is not of this
    episode (the slave's whole spool holds old messages, deleted on the master long ago).
    `caps`: voicemail.conf's maxmsg; a message that would make its folder hold more is left
    on the slave (`full`), as Asterisk would refuse it."""
    result = Plan()
    taken: dict[str, set[int]] = {}
    seen: set[tuple[str, str]] = set()
    for m in sorted(slave, key=lambda m: (m.folder, m.origtime, m.number)):
        key = (m.mailbox, m.identity)
        if since is not None and m.origtime < since - EPISODE_MARGIN:
            result.older.append(m)
            continue
        if m.identity in master_ids.get(m.mailbox, ()) or key in seen:
            result.here.append(m)
        elif m.identity in brought_back.get(m.mailbox, ()) or \
                earlier_identity(m.identity) in brought_back.get(m.mailbox, ()):
            result.before.append(m)
        else:
            used = taken.setdefault(m.folder, set())
            held = master.get(m.folder, Folder())
            number = held.next_free(used)
            if caps is not None and len(held.numbers) + len(used) >= caps.of(m.mailbox):
                number = None
            if number is None:
                result.full.append(m)
                continue
            used.add(number)
            result.place.append(Placement(m, number))
        seen.add(key)
    return result


def greeting_step(slave_mtime: float, master_mtime: float | None,
                  since: float | None = None) -> str:
    """Greetings and every other file but messages keep the rule of the other failback
    directories: 'copy' (none on the master), 'replace' (the slave's is newer: the master's is
    kept beside it), 'keep' (the master's is as new or newer, or the slave's was not written
    during the episode that began at `since`)."""
    if since is not None and slave_mtime < since:
        return 'keep'
    if master_mtime is None:
        return 'copy'
    return 'replace' if int(slave_mtime) > int(master_mtime) else 'keep'


def relative_kind(parts: tuple[str, ...]) -> str:
    """What a file of the spool is, from its path parts below the spool: 'message'
    (context/mailbox/folder/msgNNNN.ext), 'skip' (recordings in progress, lock files),
    'refuse' (anything else in a folder or below: Asterisk keeps only messages there), or
    'other' (greetings and other files of a mailbox, copied by greeting_step)."""
    name = parts[-1]
    if name.startswith('.lock') or (len(parts) >= 3 and parts[2] == IN_PROGRESS):
        return 'skip'
    if len(parts) >= 4:
        return 'message' if len(parts) == 4 and message_file(name) else 'refuse'
    return 'other'


def listed_bytes(listing: str) -> int:
    """The bytes of the regular files in `rsync --list-only` output (the size of what a copy
    would stage); directories, links and anything else count for nothing. ValueError for a
    size that is not a number of bytes (rsync's -h units): the cap must not be guessed."""
    total = 0
    for line in listing.splitlines():
        fields = line.split(None, 4)
        if len(fields) == 5 and fields[0].startswith('-'):
            size = fields[1].replace(',', '')
            if not size.isdigit():
                raise ValueError(f'not a size in bytes in rsync\'s listing: {fields[1]!r}')
            total += int(size)
    return total


def over_stage_cap(total: int, cap_mb: int) -> str | None:
    """Why the slave's spool is not staged (over [sync] voicemail_stage_max_mb), None when it
    may be; a cap of 0 is none."""
    if not cap_mb or total <= cap_mb * 1048576:
        return None
    return (f"the slave's voicemail spool holds {total / 1048576:.1f} MB, over [sync] "
            f'voicemail_stage_max_mb ({cap_mb} MB): not staged, its messages stay on the slave')
