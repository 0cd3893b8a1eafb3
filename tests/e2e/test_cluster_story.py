"""The whole cluster, as an administrator lives with it: set-up, replication, sync,
failover, failback, voicemail brought back by the next wazo-sync (nothing run by hand), and
wazo-ha-status at every stage."""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'demo'))

from replication_helpers import table_rows  # noqa: E402
from story import FILES, VOICEMAIL, Story  # noqa: E402


def eventually(condition, timeout=15.0):
    """The failover/failback sequence goes on for a moment after the call the story waits for."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


@pytest.fixture
def story():
    s = Story(fast=True, users=300, say=lambda *a: None)
    try:
        s.build()
        s.generate()
        yield s
    finally:
        s.close()


def test_the_whole_story(story):
    master, slave = story.master, story.slave

    # configured: roles, and the master warns that nothing is replicated nor synced yet
    s_conf, m_conf = story.configure()
    assert s_conf.returncode == 0 and m_conf.returncode == 0, s_conf.stderr + m_conf.stderr
    code, status = story.status(master)
    assert status['role'] == 'master' and status['peer'] == slave.ip
    assert code == 1
    assert any('no replication has run yet' in w for w in status['warnings'])
    assert any('wazo-sync -i' in w for w in status['warnings'])

    # replication: every copied row equal, the slave's own history untouched
    slave_cel = table_rows(slave, 'cel')
    assert story.sync_init().returncode == 0
    first = story.replicate('first')
    assert first.returncode == 0, first.stderr
    for table in ('userfeatures', 'linefeatures', 'extensions', 'voicemail', 'func_key_mapping',
                  'queuemember', 'groupfeatures', 'tenant', 'context'):
        assert table_rows(master, table) == table_rows(slave, table), table
    assert table_rows(slave, 'cel') == slave_cel
    assert 'already up to date' in story.replicate('again').stdout
    story.change_one_user()
    assert '1 tables copied' in story.replicate('one change').stdout
    assert table_rows(master, 'userfeatures') == table_rows(slave, 'userfeatures')

    # sync: files equal
    story.write_files()
    assert story.sync().returncode == 0
    for path in FILES:
        with open(master.host_path(path)) as a, open(slave.host_path(path)) as b:
            assert a.read() == b.read(), path
    code, status = story.status(master)
    assert code == 0, status['warnings']
    assert status['replication']['result'] == 'ok' and status['sync']['result'] == 'ok'

    # standby: the check stops what `wazo-service restart` started on the slave
    story.start_cron()
    assert slave.services_state() == 'base'
    code, status = story.status(slave)
    assert code == 0, status['warnings']
    assert status['decision']['decision'] == 'up' and status['services']['state'] == 'stopped'
    # set as master, its telephony was started and enabled at boot (wazo-sysconfd's PUT /ha
    # does the same); nothing of HA stops it
    assert master.services_state() == 'all', 'the master serves calls'
    assert not os.path.exists(master.host_path('/var/lib/wazo/disabled'))
    assert 'wazo-service stop wazo' not in master.stand_in_calls()

    # failover
    took = story.master_dies()
    assert took is not None and took < 15, took
    assert eventually(lambda: slave.services_state() == 'all')
    assert eventually(lambda: 'wazo-agentd-cli -c relog all --timeout 60' in slave.stand_in_calls())
    assert not os.path.exists(slave.host_path('/var/lib/wazo/disabled'))
    code, status = story.status(slave)
    assert code == 1 and status['decision']['decision'] == 'down'
    assert status['peer_reachable'] is False
    assert any('failover' in w for w in status['warnings'])
    code, status = story.status(master)
    assert status['peer_reachable'] is False, 'the master is cut off too'

    # failback, and the voicemail left on the slave comes back
    story.voicemail_left_on_slave()
    took = story.master_returns()
    assert took is not None and took < 6 + 15, took
    assert eventually(lambda: os.path.exists(slave.host_path('/var/lib/wazo/disabled')))
    assert eventually(lambda: slave.services_state() == 'base')
    code, status = story.status(slave)
    assert status['decision']['decision'] == 'up' and status['services']['state'] == 'stopped'
    assert code == 0, status['warnings']
    record = story.served_record(wait=30)
    assert record is not None and record.ended_at is not None, 'the slave recorded its service'
    assert not os.path.exists(master.host_path(VOICEMAIL))
    result = story.sync_after_failback()  # the hourly wazo-sync: no --failback by hand
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('brought back 1 files'), result.stdout
    with open(master.host_path(VOICEMAIL)) as f:
        assert 'Alice' in f.read()
    again = story.sync_after_failback()
    assert again.returncode == 0 and 'brought back' not in again.stdout, 'once per failover'
    assert [e for _, e in story.timeline if e.startswith('FAILOVER')]
    assert [e for _, e in story.timeline if e.startswith('FAILBACK')]

    # continuous mode: the slave hands off, then streams; what the master wrote 2 s before its
    # link was cut is on the slave
    master_set, pairing, stream = story.go_continuous()
    assert master_set.returncode == 0 and pairing.returncode == 0, master_set.stderr + pairing.stderr
    assert stream.returncode == 0 and 'hand-off done (first hand-off)' in stream.stdout, stream.stderr
    took = story.recovery_point('Streamed')
    assert took is not None and took < 5, took
    assert story.last_seconds_survive('LastMinute')
    code, status = story.status(slave)
    assert status['mode'] == 'continuous' and status['stream']['result'] == 'ok'
    assert code == 0, status['warnings']
