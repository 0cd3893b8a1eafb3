"""An hourly pair left by the previous version (hourly was the default: its settings name no
`[database] mode`) upgraded in place to this one, where continuous is the default: it keeps
replicating with no action, by the master's hourly copies (the fallback), while status and mail
say what the stream waits for; `wazo-sync -i` once (and the master's PostgreSQL restart that
wal_level needs) and the pair streams.

The pair's state before the upgrade is compared with what the previous version really left
(tests/fixtures/upgrade/hourly-pair-a9487b7.json, recorded by record_a9487b7.py from a run of
commit a9487b7): once what this version adds to the state files is taken out, the same state
files with the same keys, the same password-file users, conf.d and pg_hba.conf lines. wazo-sysconfd's PUT /ha is replayed by tests/sysconfd_stand_in.py
(wazo-platform/wazo-sysconfd, wazo_sysconfd/plugins/ha_config/ha.py), `wazo-service` by the
testbed's recording stand-in (wazo-platform/wazo-service, bin/wazo-service)."""

import json
import os
import sys

from check_helpers import FAST
from replication_helpers import replicate, run_pairing
from stream_helpers import create_user, stream, subscription, users_named, wait_until
from test_converge import converge, ok
from testbed import REPO

UPGRADE = os.path.join(REPO, 'tests', 'fixtures', 'upgrade')
sys.path.insert(0, UPGRADE)
from pair_state import node_state, prune_to, quick_summary  # noqa: E402


def recorded():
    with open(os.path.join(UPGRADE, 'hourly-pair-a9487b7.json')) as f:
        return json.load(f)


def settings(node, mode):
    node.write_settings(database={'mode': mode}, check={**FAST['check'], 'run_for': '6'})


def cron_minute_on_the_slave(slave):
    """What /etc/cron.d/wazo-ha runs on the slave in a minute: the check, the converge,
    wazo-ha-stream (its result returned)."""
    ok(slave.wazo('xivo-check-master-status'))
    ok(converge(slave))
    return stream(slave)


def postmaster_pid(node):
    with open(os.path.join(node.pgdata, 'postmaster.pid')) as f:
        return f.readline().strip()


def test_an_hourly_pair_upgraded_replicates_before_wazo_sync_i_and_streams_after(pair):
    master, slave = pair
    before = recorded()
    # the previous version's pair: its behaviour is this version's hourly mode
    for node in (master, slave):
        settings(node, 'hourly')
    quick_summary(master, slave)
    for name, node in (('master', master), ('slave', slave)):
        prune_to(node, before[name])  # this version's additions to the state files, if any
        now = node_state(node)
        assert now == before[name], f'{name}: not the state the previous version left'

    # the upgrade: the new config.ini (no mode: continuous), then postinst's converge
    for node in (master, slave):
        settings(node, None)
    pid = postmaster_pid(master)
    upgraded = ok(converge(master))
    assert 'wal_level = logical' in upgraded and 'PostgreSQL restarted' not in upgraded
    assert postmaster_pid(master) == pid, "a serving master's PostgreSQL is never restarted"
    ok(converge(slave))

    # before wazo-sync -i (and the restart): the hourly copy carries the changes
    assert cron_minute_on_the_slave(slave).returncode != 0, 'the slave cannot stream yet'
    create_user(master, 'BeforeInit')
    ok(replicate(master, slave.ip))
    assert users_named(slave, 'BeforeInit'), 'the hourly copy carried it'
    status = master.wazo('wazo-ha-status').stdout
    assert 'hourly copies' in status and 'waits for a PostgreSQL restart' in status, status
    # the restart done at a quiet time, as status says: the copy still carries, and status
    # now says what is left to do
    master.stop_postgres()
    master.start_postgres()
    assert master.psql('SHOW wal_level') == 'logical'
    create_user(master, 'AfterRestart')
    ok(replicate(master, slave.ip))
    assert users_named(slave, 'AfterRestart')
    status = master.wazo('wazo-ha-status').stdout
    assert 'hourly copies' in status and 'wazo-sync -i' in status, status
    mails = master.mails()
    assert any('restart PostgreSQL' in m for m in mails), mails
    assert any('wazo-sync -i' in m for m in mails), mails

    # wazo-sync -i once: the slave's next minute hands off, then the stream carries
    ok(run_pairing(master, slave))
    handed = cron_minute_on_the_slave(slave)
    assert handed.returncode == 0 and 'hand-off done' in handed.stdout, \
        handed.stdout + handed.stderr
    create_user(master, 'Streamed')
    assert wait_until(lambda: users_named(slave, 'Streamed'), 20), 'streamed, no replication run'
    assert subscription(slave) == (True, True)
    ok(replicate(master, slave.ip))
    assert 'hourly copies' not in master.wazo('wazo-ha-status').stdout


def upgraded_hourly_pair(master, slave, users):
    """An hourly pair configured through PUT /ha and paired, replicated once, then its
    settings as the previous version left them (no mode: continuous now) and a converge on
    each node: upgraded, not yet paired for the stream."""
    from datagen import installation_sql
    from test_converge import put_ha
    for node in (master, slave):
        settings(node, 'hourly')
    master.psql(installation_sql(users=users))
    ok(put_ha(slave, 'slave', master.ip))
    ok(put_ha(master, 'master', slave.ip))
    ok(run_pairing(master, slave))
    ok(replicate(master, slave.ip))
    for node in (master, slave):
        settings(node, None)
    ok(converge(master))
    ok(converge(slave))


def test_an_upgraded_pair_paired_with_5432_blocked_says_the_cause_of_now(pair):
    """An hourly pair upgraded, its master's PostgreSQL restarted (wal_level active), run
    through its hourly copies unpaired ("run wazo-sync -i"), then paired while the slave's flow
    to 5432 stays blocked (the previous prerequisites never opened it): status and the mail no
    longer ask for wazo-sync -i, which ran; no slot was ever dropped, so no earlier cause is
    kept (stream/master.py records a cause only with a slot it dropped)."""
    from test_stream_fallback import flow_blocked
    master, slave = pair
    upgraded_hourly_pair(master, slave, users=5)
    master.stop_postgres()
    master.start_postgres()
    with flow_blocked(slave, master):
        ok(replicate(master, slave.ip))
        assert 'wazo-sync -i' in master.wazo('wazo-ha-status').stdout, 'not paired yet'
        ok(run_pairing(master, slave))
        assert cron_minute_on_the_slave(slave).returncode != 0, 'the slave cannot reach 5432'
        create_user(master, 'Blocked')
        ok(replicate(master, slave.ip))
        assert users_named(slave, 'Blocked'), 'the hourly copy carried it'
        status = master.wazo('wazo-ha-status').stdout
        assert 'hourly copies' in status, status
        assert 'wazo-sync -i' not in status, 'status still asks for wazo-sync -i after it ran'
        assert "slave's first hand-off" in status or 'no slot' in status, status


def test_fallback_copies_trust_the_tracking_record_while_no_stream_wrote_the_slave(pair):
    """An hourly pair upgraded, not yet paired for the stream: its first fallback copy compares
    every table by content (nothing recorded says no stream wrote the slave); the next ones,
    with no slot of the slave's seen since, trust the tracking record as hourly mode does (the
    cheap comparison by row xmin) and still carry every change: tables equal row for row."""
    from test_converge import log_lines
    from stream_helpers import assert_equal_copies
    master, slave = pair
    upgraded_hourly_pair(master, slave, users=50)
    by_content = 'comparing the tables by content: a stream may have written the slave'
    runs = []
    for name in ('First', 'Second', 'Third'):
        create_user(master, name)
        seen = len(log_lines(master))
        runs.append(ok(replicate(master, slave.ip)))
        runs[-1] = (runs[-1], any(by_content in line for line in log_lines(master)[seen:]))
        assert users_named(slave, name), runs[-1]
    assert [by for _, by in runs] == [True, False, False], runs
    assert all('hourly copy' in out for out, _ in runs), runs
    assert_equal_copies(master, slave)
