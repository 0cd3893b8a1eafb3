"""Failback episodes: what the master does with the slave's record, and the record's checks."""

import pytest

from wazo_ha_common.decisions import rsync_modules
from wazo_ha_common.decisions.failback import (BRING_BACK, NOTHING, SERVING, Episode,
                                               episode_from_dict, plan)

ENDED = Episode('a1b2c3', 1000.0, 1600.0)


def test_an_ended_episode_is_brought_back_once():
    assert plan(ENDED, None) == BRING_BACK
    assert plan(ENDED, 'ffff') == BRING_BACK, 'an older episode was brought back, not this one'
    assert plan(ENDED, 'a1b2c3') == NOTHING


def test_no_record_nothing_to_bring_back():
    assert plan(None, None) == NOTHING


def test_while_the_slave_serves_nothing_is_pushed_nor_brought_back():
    assert plan(Episode('a1b2c3', 1000.0), None) == SERVING
    assert plan(Episode('a1b2c3', 1000.0), 'a1b2c3') == SERVING


def test_the_record_round_trips_and_says_how_long():
    assert episode_from_dict({'episode': 'a1b2c3', 'started_at': 1000, 'ended_at': 1600,
                              'duration': 600}) == ENDED
    assert ENDED.duration == 600 and 'for 600 s' in ENDED.describe()
    assert episode_from_dict({}) is None


@pytest.mark.parametrize('data, field', [
    ({'episode': '../x', 'started_at': 1}, 'episode'),
    ({'episode': '', 'started_at': 1}, 'episode'),
    ({'episode': 5, 'started_at': 1}, 'episode'),
    ({'episode': 'ab', 'started_at': '1'}, 'started_at'),
    ({'episode': 'ab'}, 'started_at'),
    ({'episode': 'ab', 'started_at': 1, 'ended_at': True}, 'ended_at'),
    ({'episode': 'ab', 'started_at': 10, 'ended_at': 5}, 'ended_at'),
    ({'episode': 'ab', 'started_at': 1e300}, 'started_at'),      # a hostile slave's time
    ({'episode': 'ab', 'started_at': 1, 'ended_at': 1e300}, 'ended_at'),
    ([1], 'object'),
])
def test_a_wrong_record_is_refused_by_field(data, field):
    with pytest.raises(ValueError, match=field):
        episode_from_dict(data)


def test_an_episode_out_of_the_clock_range_is_described_without_error():
    """Review of issue 25: an Episode made elsewhere (an older state file) with a time the
    C library cannot convert still reads as a sentence."""
    assert '1e+300 (not a date)' in Episode('ab', 1e300).describe()
    assert 'for ' in Episode('ab', 1e300, 2e300).describe()


def test_the_record_is_a_read_only_module_apart_from_the_failback_directories():
    mods = rsync_modules.modules(('/etc/asterisk/extensions_extra.d',),
                                 ('/var/spool/asterisk/voicemail',), '/var/lib/wazo-ha/failback-record')
    record = [m for m in mods if m.name == rsync_modules.RECORD]
    assert len(record) == 1 and not record[0].write and record[0].path == '/var/lib/wazo-ha/failback-record'
    text = rsync_modules.render_config(mods, '/usr/bin/true')
    section = text.split(f'[{rsync_modules.RECORD}]')[1].split('\n\n')[0]
    assert 'read only = yes' in section and 'write only = no' in section
