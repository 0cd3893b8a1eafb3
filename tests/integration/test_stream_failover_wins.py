"""Issue 24: the failover's disable of the stream wins over any hand-off, the first one
included. The master is declared down by its TCP probe (a port nothing listens on) while its
machine and PostgreSQL are up, so a hand-off under way could still read it and commit."""

import json
import os
import subprocess
import time

import psycopg2
import pytest

from datagen import installation_sql
from replication_helpers import copied_table_names, snapshot
from stream_helpers import (configure_continuous, continuous_settings, our_slots, subscription,
                            wait_until)


@pytest.fixture
def continuous_pair(pair):
    """Continuous mode, paired, the slave on standby; no hand-off yet."""
    master, slave = pair
    master.psql(installation_sql(users=30, history=40))
    configure_continuous(master, slave)
    assert slave.wazo('xivo-check-master-status', timeout=60).returncode == 0
    assert slave.services_state() == 'base'
    return master, slave


def sequences_behind(node, tables):
    """Sequences owned by a column of these tables whose next value is not past the column's
    largest value (nextval gives last_value when not is_called, else the one after), as
    'sequence: last_value/is_called vs max'."""
    rows = node.psql(
        "SELECT s.relname, t.relname, a.attname FROM pg_class s "
        "JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass "
        "AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') "
        "JOIN pg_class t ON t.oid = d.refobjid "
        "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid "
        "JOIN pg_namespace n ON n.oid = s.relnamespace "
        "WHERE s.relkind = 'S' AND n.nspname = 'public' ORDER BY 1")
    behind = []
    for line in rows.splitlines():
        seq, table, column = line.split('|')
        if table not in tables:
            continue
        last, called, top = node.psql(
            f'SELECT (SELECT last_value FROM "{seq}"), (SELECT is_called FROM "{seq}"), '
            f'(SELECT coalesce(max("{column}"), 0) FROM "{table}")').split('|')
        if not (int(last) > int(top) or (int(last) == int(top) and called == 't')):
            behind.append(f'{seq}: {last}/{called} vs {top}')
    return behind


def held_hand_off(master, slave):
    """The first hand-off started and held mid-copy: the slave's userfeatures is locked
    against writes (SHARE: readers pass), so its copy waits there. Returns (job, holder)."""
    holder = psycopg2.connect(f'host={slave.pgsock} dbname=asterisk user=postgres')
    holder.cursor().execute('LOCK TABLE userfeatures IN SHARE MODE')
    job = slave.popen('wazo-ha-stream', stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert wait_until(lambda: len(our_slots(master)) == 1, 30), 'the hand-off made its slot'
    assert wait_until(lambda: slave.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'wazo-ha-stream' "
        "AND wait_event_type = 'Lock'") == '1', 30), 'the copy waits on the lock'
    return job, holder


def test_a_first_hand_off_held_mid_copy_while_the_master_is_declared_down(continuous_pair):
    master, slave = continuous_pair
    tables = copied_table_names(master)
    slave.psql("SELECT setval('userfeatures_id_seq', 1)")  # behind: the failover must move it
    job, holder = held_hand_off(master, slave)
    try:
        continuous_settings(slave, check={'run_for': '6', 'tcp_ports': '5999'})
        r = slave.wazo('xivo-check-master-status', timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert 'taking over' in open(slave.log_file).read()
        assert slave.services_state() == 'all'
    finally:
        holder.rollback()
        holder.close()
    out, err = job.communicate(timeout=120)
    assert job.returncode == 1, out + err
    assert subscription(slave) is None, 'no subscription on a serving slave'
    assert sequences_behind(slave, tables) == []
    log = open(slave.log_file).read()
    assert 'wazo-ha-stream sessions under way' in log, log
    assert wait_until(lambda: our_slots(master) == [], 30), 'its slot dropped'


def test_a_hand_off_that_reaches_its_commit_after_a_failover_rolls_back(continuous_pair):
    """The failover's first step (its mark in the stream's control record) is taken while the
    copy waits; the hand-off then reaches its commit: it rolls back, subscription included."""
    master, slave = continuous_pair
    before = snapshot(slave)
    job, holder = held_hand_off(master, slave)
    try:
        path = os.path.join(slave.state_dir, 'stream-control.json')
        control = json.load(open(path)) if os.path.exists(path) else {}
        with open(path, 'w') as f:
            json.dump({**control, 'disabled_by': 'failover', 'failover_fence': 'f00d'}, f)
        time.sleep(0.5)
    finally:
        holder.rollback()
        holder.close()
    out, err = job.communicate(timeout=120)
    assert job.returncode == 1 and 'a failover (or a pause) came during the hand-off' in err, out + err
    assert subscription(slave) is None
    assert snapshot(slave) == before, 'the copy rolled back'
    assert wait_until(lambda: our_slots(master) == [], 30)


def test_a_pause_during_a_first_hand_off_leaves_no_subscription(continuous_pair):
    """wazo-ha-config pause on the slave (before an upgrade) while a hand-off copies: the pause
    is fenced like a failover, so the hand-off neither commits its copy nor starts a
    subscription that would stream during the upgrade."""
    master, slave = continuous_pair
    before = snapshot(slave)
    job, holder = held_hand_off(master, slave)
    try:
        paused = slave.wazo('wazo-ha-config', 'pause', '--wait', '0', timeout=120)
        assert paused.returncode in (0, 1), paused.stdout + paused.stderr
        assert 'wazo-ha-stream' in paused.stdout + paused.stderr, 'said to be still running'
    finally:
        holder.rollback()
        holder.close()
    out, err = job.communicate(timeout=120)
    assert job.returncode == 1, out + err  # its session ended by the pause
    assert subscription(slave) is None, 'nothing streams during the pause'
    assert snapshot(slave) == before, 'the copy rolled back'
    control = json.load(open(os.path.join(slave.state_dir, 'stream-control.json')))
    assert control['disabled_by'] == 'pause'
    assert wait_until(lambda: our_slots(master) == [], 30)
    resumed = slave.wazo('wazo-ha-config', 'resume', timeout=60)
    assert resumed.returncode == 0, resumed.stderr
