"""wazo-ha-stream: continuous replication from the master to the slave (issue 16), on two
real PostgreSQL 15 clusters in network namespaces."""

import os
import signal
import subprocess
import time

import psycopg2
import pytest

from datagen import installation_sql
from replication_helpers import snapshot
from stream_helpers import (assert_equal_copies, assert_password_kept_secret,
                            configure_continuous, continuous_settings, create_user, our_slots,
                            stream, stream_ok, streaming_baseline, subscription,
                            users_named, wait_until)


@pytest.fixture
def streaming(request):
    """Continuous mode on both nodes, paired, the first hand-off done and the subscription
    streaming. Shared: reset to this baseline (both clusters, slot and subscription with them)
    before each test, its apply worker running again."""
    return streaming_baseline(request)


@pytest.mark.fresh_testbed('sees the first hand-off as it left the nodes (a baseline restarts '
                           'the clusters)')
def test_first_hand_off_copies_then_streams(streaming):
    """The first run copies the master's tables from the slot's snapshot and subscribes on that
    slot: the slave equals the master, and a user created on the master appears within
    seconds without another run."""
    master, slave = streaming
    assert_equal_copies(master, slave)
    assert wait_until(lambda: subscription(slave) == (True, True))
    create_user(master, 'Streamed')
    assert wait_until(lambda: users_named(slave, 'Streamed'), 10)
    out = stream_ok(slave)
    assert 'streaming from the master' in out and 'lag' in out, out
    assert len(our_slots(master)) == 1


def max_user_id(node):
    return int(node.psql('SELECT max(id) FROM userfeatures'))


def check_run(slave, run_for):
    continuous_settings(slave, check={'run_for': str(run_for)})
    r = slave.wazo('xivo-check-master-status', timeout=120)
    continuous_settings(slave)
    return r


def test_failover_keeps_the_last_seconds_and_failback_streams_again(streaming):
    """A user created on the master 2 s before its link is cut is on the slave after the
    failover; the failover stops the stream and moves the sequences, so a user created on
    the serving slave gets a fresh id; after failback the next run copies the master afresh
    (the slave's own user is gone, as in hourly mode) and the stream is healthy again."""
    master, slave = streaming
    create_user(master, 'JustBefore')
    time.sleep(2)
    master.link(False)
    r = check_run(slave, 6)
    assert r.returncode == 0, r.stderr
    assert 'down' in r.stdout, r.stdout
    assert users_named(slave, 'JustBefore')
    assert subscription(slave)[0] is False
    highest = max_user_id(slave)
    assert int(users_named(slave, 'JustBefore')[0]) == highest
    assert create_user(slave, 'OnSlave') > highest
    out = stream_ok(slave)
    assert 'the slave serves' in out, out
    master.link(True)
    r = check_run(slave, 7)
    assert r.returncode == 0 and ' up' in r.stdout, r.stdout + r.stderr
    out = stream_ok(slave)
    assert 'hand-off done (failback: the master is back)' in out, out
    assert_equal_copies(master, slave)
    assert not users_named(slave, 'OnSlave')
    assert wait_until(lambda: subscription(slave) == (True, True))
    create_user(master, 'AfterFailback')
    assert wait_until(lambda: users_named(slave, 'AfterFailback'), 10)
    # all of it planned: nothing mailed but the failover and the failback, once each
    subjects = sorted(line for m in slave.mails() for line in m.splitlines()
                      if line.startswith('Subject: '))
    assert [s.split(':')[1].strip() for s in subjects] == ['Failback', 'Failover'], subjects
    assert_password_kept_secret(master, slave)


def test_a_failover_does_not_wait_for_a_hand_off_under_way(streaming):
    """A hand-off replacing the subscription holds it while its copy waits (here on a lock):
    the master dies meanwhile. The failover ends the hand-off instead of waiting for it (its
    transaction rolls back: the old subscription is back, stopped), moves the sequences and
    starts the telephony within seconds; the hand-off fails without a change."""
    master, slave = streaming
    # a table both nodes gained, published by the master's hourly run: the next run hands off
    # while the subscription still streams
    for node in (master, slave):
        node.psql('CREATE TABLE upgrade_new (id serial PRIMARY KEY); '
                  'ALTER TABLE upgrade_new OWNER TO asterisk')
    assert master.wazo('xivo-master-slave-db-replication', timeout=120).returncode == 0
    assert subscription(slave)[0] is True
    before = snapshot(slave)  # nothing is written on the master from here on
    holder = psycopg2.connect(f'host={slave.pgsock} dbname=asterisk user=postgres')
    try:
        holder.cursor().execute('LOCK TABLE userfeatures IN ACCESS EXCLUSIVE MODE')
        job = slave.popen('wazo-ha-stream', stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
        assert wait_until(lambda: len(our_slots(master)) == 2, 20)  # the new slot is made
        time.sleep(1)
        master.link(False)
        holder.rollback()  # the copy goes on, towards a master that is gone
        started = time.monotonic()
        r = check_run(slave, 6)
        took = time.monotonic() - started
        assert r.returncode == 0 and 'down' in r.stdout, r.stdout + r.stderr
        assert took < 20, took
        job.communicate(timeout=90)
        assert job.returncode == 1
    finally:
        holder.close()
        master.link(True)
    assert subscription(slave)[0] is False
    assert snapshot(slave).split('\n')[:-1] == before.split('\n')[:-1]  # rows unchanged
    with open(slave.log_file) as f:
        assert 'wazo-ha-stream sessions in the way' in f.read()


def test_a_conflict_on_the_slave_ends_in_a_fresh_hand_off_mailed_to_root(streaming):
    """A row written on the slave by someone else collides with the master's next insert:
    PostgreSQL stops the subscription (disable_on_error); the next run enables it again on its
    slot (it cannot tell a conflict from a lost connection), the same conflict stops it with
    no progress, and the run after copies afresh, subscribes again and mails root once."""
    master, slave = streaming
    next_user, next_template = master.psql(
        "SELECT (SELECT last_value + 1 FROM userfeatures_id_seq), "
        "(SELECT last_value + 1 FROM func_key_template_id_seq)").split('|')
    slave.psql("SET session_replication_role = replica; "
               f"INSERT INTO func_key_template (id, tenant_uuid, private) SELECT {next_template}, "
               "tenant_uuid, true FROM userfeatures LIMIT 1; "
               "INSERT INTO userfeatures (id, uuid, firstname, lastname, description, tenant_uuid, "
               f"func_key_private_template_id) SELECT {next_user}, uuid_generate_v4(), 'Intruder', "
               f"'', '', tenant_uuid, {next_template} FROM userfeatures LIMIT 1")
    create_user(master, 'Collides')
    assert wait_until(lambda: subscription(slave) == (False, False), 20)
    out = stream_ok(slave)   # first enabled again on its slot (it may be a lost connection)
    assert 'enabled again' in out or 'hand-off' not in out, out
    assert wait_until(lambda: subscription(slave) == (False, False), 20), 'the same conflict'
    out = stream_ok(slave)
    assert 'hand-off done (the subscription stopped on an apply error or conflict' in out, out
    assert_equal_copies(master, slave)
    assert users_named(slave, 'Collides') and not users_named(slave, 'Intruder')
    mails = slave.mails()
    assert len(mails) == 1 and 'a fresh copy was needed' in mails[0], mails
    assert wait_until(lambda: subscription(slave) == (True, True))


@pytest.mark.parametrize('cut', ['restart', 'walsender'])
def test_a_lost_connection_streams_again_on_the_same_slot(streaming, cut):
    """The master's PostgreSQL restarted, or its walsender ended: PostgreSQL disables the
    subscription (disable_on_error counts a lost connection as an error); the slave's next
    minute enables it again on the same slot, no fresh copy, no mail; what the master wrote
    meanwhile arrives once (the slot resumes at the slave's confirmed position)."""
    master, slave = streaming
    slot = our_slots(master)[0].split(':')[0]
    create_user(master, 'BeforeCut')
    assert wait_until(lambda: users_named(slave, 'BeforeCut'), 20)
    if cut == 'restart':
        master.stop_postgres()
        master.start_postgres()
    else:
        master.psql("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                    "WHERE active_pid IS NOT NULL")
    create_user(master, 'AfterCut')
    assert wait_until(lambda: subscription(slave) == (False, False), 20), 'disable_on_error'
    out = stream_ok(slave)
    assert 'hand-off' not in out and 'streaming from the master' in out, out
    assert wait_until(lambda: users_named(slave, 'AfterCut'), 20)
    assert our_slots(master) == [f'{slot}:true']
    assert subscription(slave) == (True, True)
    assert len(users_named(slave, 'BeforeCut')) == len(users_named(slave, 'AfterCut')) == 1
    assert_equal_copies(master, slave)
    assert slave.mails() == []
    assert 'hand-off' not in stream_ok(slave)


def test_a_lost_slot_ends_in_a_fresh_hand_off(streaming):
    """The slot dropped on the master (as max_slot_wal_keep_size or an administrator would):
    the next run notices, copies afresh on a new slot and mails root."""
    master, slave = streaming
    slot = our_slots(master)[0].split(':')[0]
    slave.psql("ALTER SUBSCRIPTION wazo_ha DISABLE")
    wait_until(lambda: our_slots(master) == [f'{slot}:false'])
    master.psql(f"SELECT pg_drop_replication_slot('{slot}')")
    slave.psql("ALTER SUBSCRIPTION wazo_ha ENABLE")
    create_user(master, 'WhileLost')
    out = stream_ok(slave)
    assert f'hand-off done (its slot {slot} is gone from the master)' in out, out
    assert users_named(slave, 'WhileLost')
    assert len(our_slots(master)) == 1 and slot not in our_slots(master)[0]
    assert len(slave.mails()) == 1


def test_a_schema_difference_stops_the_stream_until_the_schemas_match(streaming):
    """DDL is not replicated: a column added on the master alone stops the stream (exit 1,
    root mailed once, not every minute); once the slave has it too, the next run copies
    afresh and streams."""
    master, slave = streaming
    master.psql('ALTER TABLE userfeatures ADD COLUMN upgraded integer DEFAULT 7')
    for _ in range(2):
        r = stream(slave)
        assert r.returncode == 1 and 'userfeatures.upgraded is missing on the slave' in r.stderr, r.stderr
    assert subscription(slave)[0] is False
    assert len(slave.mails()) == 1
    slave.psql('ALTER TABLE userfeatures ADD COLUMN upgraded integer DEFAULT 7')
    out = stream_ok(slave)
    assert 'hand-off done (the schemas are equal again)' in out, out
    assert_equal_copies(master, slave)
    assert len(slave.mails()) == 1


def test_pause_stops_the_stream_and_resume_hands_off(streaming):
    """wazo-ha-config pause on the slave stops the subscription (the upgrade's DDL is not
    replicated); resume makes the next run copy afresh, nothing mailed."""
    master, slave = streaming
    r = slave.wazo('wazo-ha-config', 'pause', '--wait', '5')
    assert r.returncode == 0 and 'continuous replication stopped (pause)' in r.stdout, r.stdout + r.stderr
    create_user(master, 'DuringPause')
    time.sleep(2)
    assert not users_named(slave, 'DuringPause')
    r = slave.wazo('wazo-ha-config', 'resume')
    assert r.returncode == 0, r.stderr
    out = stream_ok(slave)
    assert 'hand-off done (resumed after a pause)' in out, out
    assert users_named(slave, 'DuringPause')
    assert slave.mails() == []


def test_hourly_mode_drops_the_subscription_left_behind(streaming):
    """Back to [database] mode = hourly: the next run drops the subscription; later runs say
    there is nothing to do and exit 0."""
    master, slave = streaming
    slave.write_settings()
    out = stream_ok(slave)
    assert 'subscription left behind is dropped' in out, out
    assert subscription(slave) is None
    assert 'mode is hourly' in stream_ok(slave)


BAD_ARGUMENTS = [
    ('wazo-master.example.com', 'not an IP address'),
    ('198.18.0.2', 'an address of this node'),
    ('198.18.0.9', 'is not the master configured'),
    ('198.18.0.1;reboot', 'not an IP address'),
    ('', 'not an IP address'),
]


def test_bad_input_a_second_run_and_the_wrong_role_change_nothing(streaming):
    """A hostname, this node's own address, another address than the master's, shell
    metacharacters, an empty argument, a missing or corrupt ha.conf or settings file: exit 2,
    one line, no slot nor subscription changed; a second run while one holds the lock: exit 1;
    on the master: nothing done, said, exit 0. (One streaming pair for all of them: each
    refusal leaves it as it was, which is the point.)"""
    master, slave = streaming
    before = our_slots(master)
    for argument, message in BAD_ARGUMENTS:
        r = stream(slave, argument)
        assert r.returncode == 2 and message in r.stderr, (argument, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, argument
        assert our_slots(master) == before and subscription(slave)[0] is True, argument
    r = stream(slave, '--no-such-option')
    assert r.returncode == 2 and 'unrecognized arguments' in r.stderr
    with slave.lock_held('wazo-ha-stream'):
        r = stream(slave)
    assert r.returncode == 1 and 'another wazo-ha-stream is running' in r.stderr, r.stderr
    assert subscription(slave)[0] is True
    r = stream(master)
    assert r.returncode == 0 and 'slave' in r.stdout, r.stdout + r.stderr
    ha_conf = slave.host_path('/etc/xivo/ha.conf')
    with open(ha_conf) as f:
        kept = f.read()
    try:
        for content in (None, '{"node_type": "slave", "remote_address": '):
            if content is None:
                os.unlink(ha_conf)
            else:
                with open(ha_conf, 'w') as f:
                    f.write(content)
            r = stream(slave)
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert subscription(slave)[0] is True
    finally:
        with open(ha_conf, 'w') as f:
            f.write(kept)
    r = slave.wazo('wazo-ha-stream', env={'WAZO_HA_CONFIG': '/nonexistent/config.ini'})
    assert r.returncode == 2 and 'settings file not found' in r.stderr, r.stderr
    continuous_settings(slave, database={'mode': 'sometimes'})
    r = stream(slave)
    assert r.returncode == 2 and '[database] mode' in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert our_slots(master) and subscription(slave)[0] is True


def test_a_hand_off_cut_short_anywhere_leaves_the_slave_as_it_was(pair):
    """A hand-off held up in the middle (the slot made, its snapshot being copied) and then:
    the job killed, the master's PostgreSQL stopped, the link cut, the slave's PostgreSQL
    stopped. Each time the slave's tables are as they were and it has no subscription; the
    next run, with everything back, copies, subscribes and drops the slots left behind."""
    master, slave = pair
    master.psql(installation_sql(users=30, history=40))
    configure_continuous(master, slave)
    before = snapshot(slave)
    for disruption in ('kill', 'master-postgres', 'link', 'slave-postgres'):
        # a session on the slave holds userfeatures: the copy waits there, slot made
        holder = psycopg2.connect(f'host={slave.pgsock} dbname=asterisk user=postgres')
        holder.cursor().execute('LOCK TABLE userfeatures IN ACCESS EXCLUSIVE MODE')
        job = slave.popen('wazo-ha-stream', stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
        assert wait_until(lambda: our_slots(master), 20), disruption
        time.sleep(1)
        if disruption == 'kill':
            job.send_signal(signal.SIGKILL)
        elif disruption == 'master-postgres':
            master.stop_postgres('fast')
        elif disruption == 'link':
            master.link(False)
        if disruption == 'slave-postgres':
            slave.stop_postgres('fast')
        holder.close()
        job.communicate(timeout=90)
        assert job.returncode != 0, disruption
        if disruption == 'master-postgres':
            master.start_postgres()
        elif disruption == 'link':
            master.link(True)
        elif disruption == 'slave-postgres':
            slave.start_postgres()
        assert snapshot(slave) == before, disruption
        assert subscription(slave) is None, disruption
    out = stream_ok(slave)
    assert 'hand-off done (first hand-off)' in out, out
    assert_equal_copies(master, slave)
    assert len(our_slots(master)) == 1


def test_the_hourly_run_reconciles_publication_and_sequences(streaming):
    """In continuous mode the master's hourly run copies no rows: it moves the slave's
    sequences forward to the master's and keeps the publication in step with the copied
    tables. A table both nodes gained (an upgrade) is published by that run, and the next
    wazo-ha-stream run hands off so that the subscription carries it too."""
    master, slave = streaming
    create_user(master, 'Sequenced')
    assert wait_until(lambda: users_named(slave, 'Sequenced'), 10)
    seq = "SELECT last_value FROM userfeatures_id_seq"
    assert slave.psql(seq) != master.psql(seq)  # the stream does not carry sequences
    for node in (master, slave):
        node.psql('CREATE TABLE upgrade_new (id serial PRIMARY KEY, name text); '
                  'ALTER TABLE upgrade_new OWNER TO asterisk')
    r = master.wazo('xivo-master-slave-db-replication', timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'continuous replication to 198.18.0.2: the slave streams on slot' in r.stdout, r.stdout
    assert slave.psql(seq) == master.psql(seq)
    assert 'upgrade_new' in master.psql("SELECT string_agg(tablename, ' ') FROM "
                                        "pg_publication_tables WHERE pubname = 'wazo_ha'")
    out = stream_ok(slave)
    assert 'hand-off done (the published tables changed)' in out, out
    master.psql("INSERT INTO upgrade_new (name) VALUES ('streamed')")
    assert wait_until(lambda: slave.psql('SELECT name FROM upgrade_new') == 'streamed', 10)
    assert slave.mails() == []
