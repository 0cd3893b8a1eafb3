"""The whole cluster, as an administrator lives with it, with the default settings (no
[database] mode written: continuous): set-up, the first copy, the stream, sync, failover (a user
created 2 s before the master died is on the slave), failback, voicemail brought back by the
next wazo-sync (nothing run by hand), the stream resumed, then the fallback (the slave's flow to
the master's 5432 blocked: the master's hourly run copies, status says why, the stream resumes
afresh once it reopens), and wazo-ha-status at every stage."""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', '..', 'demo'))

from replication_helpers import table_rows  # noqa: E402
from stream_helpers import assert_equal_copies, our_slots, users_named, wait_equal  # noqa: E402
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

    # the first copy: just paired, the slave has not handed off yet (its next cron minute), the
    # master's run copies as in hourly mode;
    # every copied row equal, the slave's own history untouched
    slave_cel = table_rows(slave, 'cel')
    assert story.sync_init().returncode == 0
    first = story.replicate('first')
    assert first.returncode == 0, first.stderr
    assert 'hourly copy' in first.stdout, first.stdout
    assert "waiting for the slave's first hand-off" in first.stdout, first.stdout
    for table in ('userfeatures', 'linefeatures', 'extensions', 'voicemail', 'func_key_mapping',
                  'queuemember', 'groupfeatures', 'tenant', 'context'):
        assert table_rows(master, table) == table_rows(slave, table), table
    assert table_rows(slave, 'cel') == slave_cel

    # the slave's cron minute: the check stops what `wazo-service restart` started on the
    # slave, wazo-ha-stream hands off; a change streams, the hourly run copies nothing
    story.start_cron()
    assert slave.services_state() == 'base'
    handed = story.stream('stream')
    assert handed.returncode == 0 and 'hand-off done (first hand-off)' in handed.stdout, \
        handed.stdout + handed.stderr
    assert story.recovery_point('Streamed') is not None
    assert story.in_force(slave) == 'replication in force: continuous'
    again = story.replicate('again')
    assert 'the slave streams on slot' in again.stdout and 'hourly copy' not in again.stdout, \
        again.stdout
    story.change_one_user()
    assert eventually(lambda: table_rows(master, 'userfeatures') ==
                      table_rows(slave, 'userfeatures'))

    # sync: files equal
    story.write_files()
    assert story.sync().returncode == 0
    for path in FILES:
        with open(master.host_path(path)) as a, open(slave.host_path(path)) as b:
            assert a.read() == b.read(), path
    code, status = story.status(master)
    assert code == 0, status['warnings']
    assert status['sync']['result'] == 'ok'

    # standby
    code, status = story.status(slave)
    assert code == 0, status['warnings']
    assert status['decision']['decision'] == 'up' and status['services']['state'] == 'stopped'
    assert status['mode'] == 'continuous' and status['stream']['result'] == 'ok'
    # set as master, its telephony was started and enabled at boot (wazo-sysconfd's PUT /ha
    # does the same); nothing of HA stops it
    assert master.services_state() == 'all', 'the master serves calls'
    assert not os.path.exists(master.host_path('/var/lib/wazo/disabled'))
    assert 'wazo-service stop wazo' not in master.stand_in_calls()

    # failover: what the master wrote 2 s before it died is on the slave that serves
    story.user_before_death('LastSeconds')
    took = story.master_dies()
    assert took is not None and took < 15, took
    assert story.user_on_slave('LastSeconds', 'which now serves')
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

    # the slave serves no more: its next wazo-ha-stream hands off again
    resumed = story.stream('stream again')
    assert resumed.returncode == 0 and 'hand-off done' in resumed.stdout, \
        resumed.stdout + resumed.stderr
    assert story.recovery_point('AfterFailback') is not None

    # never worse than hourly: the slave's flow to the master's 5432 blocked
    assert story.block_flow() is not None
    story.new_user('WhileBlocked')
    refused = story.stream('refused')
    assert refused.returncode == 1 and 'Connection refused' in refused.stderr, refused.stderr
    copied, _ = story.fallback_copy()
    assert copied.returncode == 0, copied.stderr
    assert 'hourly copy: continuous replication is not in force' in copied.stdout, copied.stdout
    assert story.user_on_slave('WhileBlocked', 'carried by the copy')
    assert our_slots(master) == [], 'dropped before the copy'
    assert_equal_copies(master, slave)
    assert story.in_force(master).startswith(
        "replication in force: hourly copies: the slave's slot")
    assert story.in_force(slave).startswith(
        "replication in force: hourly copies: the slave cannot reach the master's 5432 "
        '(Connection refused) since ')
    story.reopen_flow()
    afresh = story.stream('afresh')
    assert afresh.returncode == 0 and 'hand-off done (its slot' in afresh.stdout, \
        afresh.stdout + afresh.stderr
    assert story.recovery_point('AfterReopen') is not None
    assert story.in_force(slave) == 'replication in force: continuous'
    assert wait_equal(master, slave)
    for name in ('Streamed', 'LastSeconds', 'AfterFailback', 'WhileBlocked', 'AfterReopen'):
        assert len(users_named(slave, name)) == 1, name
