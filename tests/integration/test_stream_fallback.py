"""Never worse than hourly (issue 26): in continuous mode, when the slave does not stream, the
master's hourly run copies as in hourly mode; the stream resumes by a fresh hand-off. Two real
PostgreSQL 15 clusters in network namespaces; the slave's flow to the master's TCP 5432 is
blocked by an nft rule in the slave's namespace, as a firewall would."""

import contextlib
import subprocess

import pytest

from replication_helpers import table_rows
from stream_helpers import (assert_equal_copies, configure_continuous, continuous_settings,
                            create_user, our_slots, stream, stream_ok, streaming_baseline,
                            users_named, wait_equal, wait_until)

FALLBACK_SUBJECT = 'hourly copies, continuous replication is not in force'
RESUMED_SUBJECT = 'continuous replication is in force again'
# a table with a serial key and one without a primary key (published with REPLICA IDENTITY
# FULL), on both nodes as an upgrade would make them
TABLES_SQL = ('CREATE TABLE fallback_serial (id serial PRIMARY KEY, name text); '
              'CREATE TABLE fallback_nopk (name text, n int); '
              'ALTER TABLE fallback_serial OWNER TO asterisk; '
              'ALTER TABLE fallback_nopk OWNER TO asterisk')


@contextlib.contextmanager
def flow_blocked(slave, master):
    """The slave's TCP to the master's 5432 refused in the slave's namespace (its own
    PostgreSQL still answers the master: only the slave-to-master flow is cut)."""
    rules = ('add table inet wazo_ha_test\n'
             'add chain inet wazo_ha_test out { type filter hook output priority 0 ; }\n'
             f'add rule inet wazo_ha_test out ip daddr {master.ip} tcp dport 5432 '
             'reject with tcp reset\n')
    r = slave.run('nft', '-f', '-', input=rules)
    assert r.returncode == 0, r.stderr
    try:
        yield
    finally:
        slave.run('nft', 'delete', 'table', 'inet', 'wazo_ha_test')


def replicate(master):
    r = master.wazo('xivo-master-slave-db-replication', timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def status(node):
    return node.wazo('wazo-ha-status').stdout


def fallback_mails(node, subject=FALLBACK_SUBJECT):
    return [m for m in node.mails() if subject in m]


def rows(node, table):
    return table_rows(node, table)


@pytest.fixture
def streaming_pair(request):
    """test_stream's shared baseline: paired, handed off, streaming."""
    return streaming_baseline(request)


@pytest.mark.fresh_testbed('blocks the slave\'s flow to the master\'s 5432, drops its slot and '
                           'shortens the master\'s wal_sender_timeout')
def test_a_blocked_5432_gets_hourly_copies_then_the_stream_resumes_afresh(streaming_pair):
    """The flow slave -> master:5432 blocked: the master's hourly run copies (a change made
    while blocked arrives by the copy), status on both nodes says why, root is mailed once over
    two runs. The flow reopened: the slave hands off afresh (its slot was dropped before the
    copy), further changes stream, status says continuous again. At the end every copied table
    is equal row for row, a serial-keyed table and one without a primary key included: no row
    lost nor doubled."""
    master, slave = streaming_pair
    # the master notices the broken connection within seconds rather than a minute
    master.psql("ALTER SYSTEM SET wal_sender_timeout = '3s'")
    master.psql('SELECT pg_reload_conf()')
    for node in (master, slave):
        node.psql(TABLES_SQL)
    out = replicate(master)   # in force: publishes the new tables, copies nothing
    assert 'the slave streams on slot' in out, out
    assert 'hand-off done (the published tables changed)' in stream_ok(slave)
    master.psql("INSERT INTO fallback_serial (name) SELECT 'before ' || i FROM "
                "generate_series(1, 50) i; INSERT INTO fallback_nopk SELECT 'before', i FROM "
                "generate_series(1, 50) i")
    create_user(master, 'BeforeBlock')
    assert wait_equal(master, slave)
    slot = our_slots(master)[0].split(':')[0]
    assert 'replication in force: continuous' in status(master)

    with flow_blocked(slave, master):
        assert wait_until(lambda: our_slots(master) == [f'{slot}:false'], 60), our_slots(master)
        create_user(master, 'WhileBlocked')
        master.psql("INSERT INTO fallback_serial (name) VALUES ('blocked'); "
                    "UPDATE fallback_nopk SET n = n + 1000 WHERE n <= 10; "
                    "DELETE FROM fallback_serial WHERE id <= 5; "
                    "INSERT INTO fallback_nopk VALUES ('blocked', 7), ('blocked', 7)")
        r = stream(slave)
        assert r.returncode == 1 and 'Connection refused' in r.stderr, r.stderr
        assert not users_named(slave, 'WhileBlocked')

        out = replicate(master)
        assert 'hourly copy: continuous replication is not in force' in out, out
        assert f"the slave's slot {slot} is inactive" in out, out
        assert users_named(slave, 'WhileBlocked')       # the change arrived by the copy
        assert our_slots(master) == []                   # dropped before the copy
        assert_equal_copies(master, slave)
        said = status(master)
        assert "replication in force: hourly copies: the slave's slot" in said, said
        assert 'to stream: open TCP 5432 from the slave to the master' in said, said
        said = status(slave)
        assert ("replication in force: hourly copies: the slave cannot reach the master's 5432 "
                '(Connection refused) since ') in said, said

        master.psql("INSERT INTO fallback_serial (name) VALUES ('second hour')")
        assert stream(slave).returncode == 1
        out = replicate(master)   # the same cause: copied again, not mailed again
        assert 'hourly copy' in out and 'has not handed off since' in out, out
        assert rows(slave, 'fallback_serial') == rows(master, 'fallback_serial')
        mails = fallback_mails(master)
        assert len(mails) == 1, mails
        assert 'open TCP 5432 from the slave to the master' in mails[0]

    out = stream_ok(slave)
    assert f'hand-off done (its slot {slot} is gone from the master)' in out, out
    assert 'replication in force: continuous' in status(slave)
    create_user(master, 'AfterReopen')
    master.psql("INSERT INTO fallback_serial (name) VALUES ('after'); "
                "UPDATE fallback_nopk SET n = n + 1 WHERE name = 'blocked'")
    assert wait_until(lambda: users_named(slave, 'AfterReopen'), 20)
    out = replicate(master)
    assert 'the slave streams on slot' in out, out
    assert 'replication in force: continuous' in status(master)
    assert len(fallback_mails(master, RESUMED_SUBJECT)) == 1
    assert len(fallback_mails(master)) == 1
    assert wait_equal(master, slave)
    assert_equal_copies(master, slave)
    for table in ('fallback_serial', 'fallback_nopk', 'userfeatures'):
        assert rows(slave, table) == rows(master, table), table
    count = "SELECT count(*) || ' ' || count(DISTINCT t::text) FROM {} t"
    assert slave.psql(count.format('fallback_serial')) == \
        master.psql(count.format('fallback_serial')) == '48 48'  # 50 + 1 - 5 + 1 + 1
    assert slave.psql(count.format('fallback_nopk')) == master.psql(count.format('fallback_nopk'))
    assert slave.psql("SELECT count(*) FROM fallback_nopk WHERE name = 'blocked'") == '2'
    # the slave's sequence followed: its next id is past the master's largest
    assert int(slave.psql("SELECT last_value FROM fallback_serial_id_seq")) >= \
        int(master.psql('SELECT max(id) FROM fallback_serial'))


def test_a_slave_that_never_handed_off_gets_hourly_copies(pair):
    """A continuous master whose slave has no slot (wazo-ha-stream never ran there) copies as
    in hourly mode instead of leaving the slave stale. Right after the pairing the slave's
    first hand-off is awaited (its next cron minute): said, not mailed; once [database]
    first_hand_off_wait has passed (0 here), the missing slot is a cause mailed once with the
    fix."""
    master, slave = pair
    configure_continuous(master, slave)
    out = replicate(master)
    assert "hourly copy: continuous replication is not in force, waiting for the slave's " \
           'first hand-off' in out, out
    assert_equal_copies(master, slave)
    assert fallback_mails(master) == []
    continuous_settings(master, database={'first_hand_off_wait': '0'})
    out = replicate(master)
    assert 'hourly copy: continuous replication is not in force, the slave has no slot' in out, out
    replicate(master)
    mails = fallback_mails(master)
    assert len(mails) == 1 and 'open TCP 5432' in mails[0], master.mails()
    assert not [m for m in master.mails() if 'Slave replication failed' in m]
    said = status(master)
    assert 'replication in force: hourly copies: the slave has no slot on the master' in said


def test_a_stream_in_force_is_not_copied(streaming_pair):
    """The slave streams: the hourly run copies no row (it moves the sequences forward only)."""
    master, slave = streaming_pair
    out = replicate(master)
    assert 'the slave streams on slot' in out and 'hourly copy' not in out, out
    assert fallback_mails(master) == []
    assert len(our_slots(master)) == 1


def advisory_waiters(slave):
    return int(slave.psql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                          'AND NOT granted'))


class CopyLockRace:
    """A test session holding the slave's copy lock (the one the fallback copy and the
    hand-off take, adapters/db/logical.COPY_LOCK) and the commands started while it holds it;
    release() lets them go; on exit the lock is released and any command still running killed."""

    def __init__(self, slave):
        import psycopg2
        from wazo_ha_common.adapters.db.logical import COPY_LOCK
        self.holder = psycopg2.connect(f'host={slave.pgsock} dbname=asterisk user=postgres')
        self.holder.autocommit = True
        self.jobs = []
        try:
            self.holder.cursor().execute('SELECT pg_advisory_lock(%s)', (COPY_LOCK,))
        except BaseException:
            self.holder.close()
            raise

    def start(self, node, command):
        self.jobs.append(node.popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True))

    def release(self):
        self.holder.close()

    def results(self):
        """(exit code, stdout, stderr) of each command, in the order started."""
        done = []
        for job in self.jobs:
            out, err = job.communicate(timeout=300)
            done.append((job.returncode, out, err))
        return done

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.holder.closed:
            self.holder.close()
        for job in self.jobs:
            if job.poll() is None:
                job.kill()
                job.communicate()


@pytest.mark.parametrize('first', ['copy', 'hand-off'])
def test_a_hand_off_racing_the_fallback_copy_applies_nothing_twice(streaming_pair, first):
    """The slave paused (its subscription disabled: the master sees the slot inactive and
    copies), then resumed while the master's fallback copy runs: both wait on the slave's copy
    lock, held by a test session, in the order `first`, and go on when it is released; a user
    is created while both wait: after the hand-off's slot and snapshot, before the copy's (it
    takes its snapshot once it holds the lock), so the copy carries it and the hand-off's copy
    does not. Copy first: it drops the hand-off's new slot; the hand-off, finding its slot gone
    once it holds the lock, rolls back its older copy and hands off afresh at once
    (stream/handoff.py, right after the copy lock), so that user is on the slave when both are
    done, never taken back. Hand-off first: the copy finds its slot active (no copy) or drops
    it (copy, then a fresh hand-off). Either way every copied table ends equal to the master's
    row for row and further changes stream."""
    master, slave = streaming_pair
    r = slave.wazo('wazo-ha-config', 'pause', '--wait', '5')
    assert r.returncode == 0, r.stdout + r.stderr
    assert wait_until(lambda: all(s.endswith(':false') for s in our_slots(master)), 30)
    create_user(master, 'Raced')
    with CopyLockRace(slave) as race:
        starts = {'copy': lambda: race.start(master, 'xivo-master-slave-db-replication'),
                  'hand-off': lambda: race.start(slave, 'wazo-ha-stream')}
        second = 'hand-off' if first == 'copy' else 'copy'
        assert slave.wazo('wazo-ha-config', 'resume').returncode == 0
        starts[first]()
        assert wait_until(lambda: advisory_waiters(slave) == 1, 60), first
        starts[second]()
        assert wait_until(lambda: advisory_waiters(slave) == 2, 60), second
        create_user(master, 'BetweenSnapshots')  # after the hand-off's snapshot
        race.release()
        outs = {}
        for name, (code, out, err) in zip((first, second), race.results()):
            assert code == 0, (name, out, err)
            outs[name] = out
    assert 'hand-off done (resumed after a pause)' in outs['hand-off'], outs
    copied = 'hourly copy' in outs['copy']
    if first == 'copy':   # its slot dropped by the copy: the hand-off was made afresh at once
        assert copied, outs
        assert len(users_named(slave, 'BetweenSnapshots')) == 1, 'taken back by the older copy'
        out = stream_ok(slave)
        assert 'hand-off' not in out and 'streaming from the master' in out, out
    elif copied:   # the slots were dropped before the copy: the next run hands off afresh
        out = stream_ok(slave)
        assert 'hand-off done (its slot' in out and 'is gone from the master' in out, out
    else:        # the hand-off's stream was in force by then: no copy
        assert 'the slave streams' in outs['copy'], outs
    create_user(master, 'AfterRace')
    assert wait_until(lambda: users_named(slave, 'AfterRace'), 20)
    assert len(users_named(slave, 'Raced')) == 1
    assert wait_equal(master, slave)  # (BetweenSnapshots too, once, in either order)
    for table in ('userfeatures', 'func_key_template'):
        assert rows(slave, table) == rows(master, table), table
