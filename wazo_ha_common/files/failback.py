"""Failback records: the slave records the telephony it served; the master's next wazo-sync
brings the voicemail and recordings left there back, once per episode, before any push (what
it does is decided in decisions/failback; here the records are read and written).

Least privilege: the master's key only reads the slave's record (a read-only rsync module,
rsync_modules.RECORD) and the master never writes on the slave for it. The slave opens an
episode (a random id, when) when it takes telephony over and closes it (when, how long) when
it gives telephony back; the master keeps the id of the last episode it brought back in its
own state, so an episode is brought back once. The slave's record stays until the next
failover replaces it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import asdict

from ..decisions.failback import Episode, episode_from_dict
from ..settings import Settings
from ..adapters.system import read_state, write_state

logger = logging.getLogger('wazo-ha')

RECORD_FILE = 'served.json'      # on the slave, in [sync] record_dir
BROUGHT_BACK_FILE = 'failback.json'  # on the master, in [paths] state_dir
SLAVE_RECORD_FILE = 'slave-record.json'  # on the master: the slave's record as last read

def parse_record(path: str) -> Episode | None:
    """The slave's record read from path (a copy fetched by the master, or the slave's own);
    a missing file is no episode, a wrong one is said in the log and ignored."""
    try:
        return episode_from_dict(read_state(os.path.dirname(path), os.path.basename(path)))
    except ValueError as e:
        logger.warning('%s is not a valid failback record (%s): ignored', path, e)
        return None


def read_record(path: str) -> Episode | None:
    """The slave's record as the master must read it: missing is no episode, but a record
    that is there and invalid (not JSON, wrong fields, empty) raises ValueError: the master
    cannot tell whether the slave serves, so it must not act as if it did not."""
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        raise ValueError('not JSON') from None
    if data == {}:
        raise ValueError('an empty object')
    return episode_from_dict(data)


# on the slave

def record_path(settings: Settings) -> str:
    return os.path.join(settings.sync.record_dir, RECORD_FILE)


def _save(settings: Settings, episode: Episode, announced: bool | None = None) -> None:
    write_state(settings.sync.record_dir, RECORD_FILE,
                {**asdict(episode), 'duration': episode.duration,
                 **({} if announced is None else {'announced': announced})})


def serving(settings: Settings, now: float | None = None) -> str | None:
    """The slave serves telephony: open an episode unless one is open. Returns what changed."""
    current = parse_record(record_path(settings))
    if current is not None and current.ended_at is None:
        return None
    episode = Episode(secrets.token_hex(8), time.time() if now is None else now)
    _save(settings, episode, announced=False)
    return f'failback record: episode {episode.episode} opened (this slave serves telephony)'


def announce(settings: Settings) -> bool:
    """True once per episode, the first time its telephony started (maybe at a later run than
    the one that opened it: a failed step retried); the record keeps that it was announced.
    A record without the flag (written before it existed) counts as announced."""
    current = parse_record(record_path(settings))
    data = read_state(settings.sync.record_dir, RECORD_FILE)
    if current is None or current.ended_at is not None or data.get('announced') is not False:
        return False
    _save(settings, current, announced=True)
    return True


def gave_back(settings: Settings, now: float | None = None) -> str | None:
    """The slave gave telephony back: close the open episode. Returns what changed."""
    current = parse_record(record_path(settings))
    if current is None or current.ended_at is not None:
        return None
    ended = max(current.started_at, time.time() if now is None else now)
    closed = Episode(current.episode, current.started_at, ended)
    _save(settings, closed)
    return (f'failback record: episode {closed.episode} closed (served telephony '
            f'{closed.describe()}); the master\'s next wazo-sync brings voicemail and '
            'recordings back')


# on the master

def last_brought_back(settings: Settings) -> str | None:
    episode = read_state(settings.paths.state_dir, BROUGHT_BACK_FILE).get('episode')
    return episode if isinstance(episode, str) else None


def brought_back(settings: Settings, episode: Episode, files: int) -> None:
    write_state(settings.paths.state_dir, BROUGHT_BACK_FILE,
                {**asdict(episode), 'brought_back_at': time.time(), 'files': files})


def remember_slave_record(settings: Settings, record: Episode | None) -> None:
    """The slave's record as wazo-sync read it, for the master's wazo-ha-status."""
    write_state(settings.paths.state_dir, SLAVE_RECORD_FILE,
                {'record': asdict(record) if record else None, 'read_at': time.time()})


def slave_view(settings: Settings) -> dict:
    """What the master knows of the slave's telephony: the slave's last record as wazo-sync
    read it (when), and the last episode brought back; {} when wazo-sync never read it."""
    state = read_state(settings.paths.state_dir, SLAVE_RECORD_FILE)
    if not state:
        return {}
    try:
        record = episode_from_dict(state.get('record') or {})
    except (ValueError, TypeError):   # written by an older wazo-sync: whatever the slave said
        record = None
    back = read_state(settings.paths.state_dir, BROUGHT_BACK_FILE)
    return {'read_at': state.get('read_at'),
            'serving': bool(record and record.ended_at is None),
            'decision': 'none' if record is None else ('down' if record.ended_at is None else 'up'),
            'episode': record.describe() if record else '',
            'brought_back': bool(record and record.ended_at is not None
                                 and back.get('episode') == record.episode),
            'brought_back_at': back.get('brought_back_at') if record and
            back.get('episode') == record.episode else None,
            'files': back.get('files') if record and back.get('episode') == record.episode
            else None}
