"""Issue 24: the master's hourly database copy leaves a slave that serves telephony alone.

A master declared down by the SIP probe (Asterisk dead, its machine and PostgreSQL up) still
runs its cron copy: it must not replace what users change on the serving slave."""

import json
import os

from check_helpers import check
from datagen import installation_sql
from replication_helpers import assert_slave_consistent, configure, replicate
from testbed import sh, wait_until

SIP = {'sip_options': 'udp:5060'}
FORWARD = "enableunc = 1, destunc = '0612345678'"


def forward(node, user):
    return node.psql(f"SELECT enableunc || ' ' || destunc FROM userfeatures WHERE id = {user}")


def copied_then_changed_on_the_slave(master, slave) -> str:
    """A pair configured, one copy made, then a user's forward set on the slave alone (as *21
    there would): the user's id."""
    master.psql(installation_sql(users=20, history=50))
    configure(master, slave)
    user = master.psql('SELECT min(id) FROM userfeatures')
    assert replicate(master).returncode == 0
    slave.psql(f'UPDATE userfeatures SET {FORWARD} WHERE id = {user}')
    return user


def served_record(slave) -> str:
    """The slave's failback record (failback.serving writes it), its directory made."""
    record = os.path.join(slave.root, 'failback-record', 'served.json')
    os.makedirs(os.path.dirname(record), exist_ok=True)
    return record


def test_a_slave_serving_after_a_sip_failover_keeps_its_changes_until_failback(pair):
    master, slave = pair
    master.psql(installation_sql(users=50, history=100))
    configure(master, slave)
    assert replicate(master).returncode == 0
    user = master.psql('SELECT min(id) FROM userfeatures')
    master.start_sip_server()
    assert check(slave, **SIP).returncode == 0
    assert slave.services_state() == 'base'

    master.stop_sip_server()  # Asterisk died; the master's machine and PostgreSQL are up
    assert check(slave, run_for=6, **SIP).returncode == 0
    assert slave.services_state() == 'all', 'failed over'
    slave.psql(f'UPDATE userfeatures SET {FORWARD} WHERE id = {user}')  # *21 on the slave
    for args in ((), ('--verify',)):
        result = replicate(master, *args, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.count('\n') == 1 and 'is left alone: it serves telephony since' \
            in result.stdout, result.stdout
        assert forward(slave, user) == '1 0612345678', 'kept while the slave serves'
    assert 'is left alone' in open(master.log_file).read()

    master.start_sip_server()
    assert check(slave, run_for=7, **SIP).returncode == 0
    assert slave.services_state() == 'base', 'failed back'
    result = replicate(master)
    assert result.returncode == 0, result.stderr
    assert 'tables copied' in result.stdout
    assert forward(slave, user) == forward(master, user) == '0'
    assert_slave_consistent(master, slave)


def test_a_slave_whose_record_cannot_be_read_is_left_alone_unless_forced(pair):
    master, slave = pair
    user = copied_then_changed_on_the_slave(master, slave)
    slave.stop_sshd()  # its PostgreSQL answers, its failback record cannot be read
    result = replicate(master, check=False)
    assert result.returncode == 0, result.stderr
    assert 'left alone: cannot tell whether it serves telephony' in result.stdout
    assert forward(slave, user) == '1 0612345678'
    state = os.path.join(master.state_dir, 'replication.json')
    with open(state) as f:
        last = json.load(f)
    assert last['result'] == 'held' and last['details']['last_copied_at'] is not None
    assert master.mails() == [], 'not mailed before 2 hours of cannot tell'
    last['details']['cannot_tell_since'] -= 2 * 3600 + 1  # as if held since 2 hours
    with open(state, 'w') as f:
        json.dump(last, f)
    for _ in range(2):
        assert replicate(master, check=False).returncode == 0
        mails = master.mails()
        assert len(mails) == 1 and 'cannot tell whether it serves telephony' in mails[0], \
            'mailed once after 2 hours'
    forced = replicate(master, '--force')
    assert forced.returncode == 0, forced.stderr
    assert forward(slave, user) == '0'


def test_an_invalid_failback_record_on_the_slave_means_cannot_tell(pair):
    """Review of issue 24: a served.json that is there but invalid is no proof the slave is on
    standby: the copy holds (as for an unreadable record), it does not copy over it."""
    master, slave = pair
    user = copied_then_changed_on_the_slave(master, slave)
    record = served_record(slave)
    for bad in ('{"episode": "ab', '{}', '{"episode": "x y", "started_at": 1}'):
        with open(record, 'w') as f:
            f.write(bad)
        result = replicate(master, check=False)
        assert result.returncode == 0, result.stderr
        assert 'left alone: cannot tell whether it serves telephony' in result.stdout, bad
        assert 'is not valid' in result.stdout, result.stdout
        assert forward(slave, user) == '1 0612345678', bad


def test_a_copy_under_way_when_the_slave_starts_serving_rolls_back(pair):
    """Review of issue 24: the master's copy is held mid-write (a lock on the slave's
    userfeatures); meanwhile the slave opens an episode (the failover's first step); at its
    commit the copy re-reads the record, rolls back and is recorded as held."""
    import subprocess

    import psycopg2
    master, slave = pair
    user = copied_then_changed_on_the_slave(master, slave)
    holder = psycopg2.connect(f'host={slave.pgsock} dbname=asterisk user=postgres')
    try:
        holder.cursor().execute('LOCK TABLE userfeatures IN SHARE MODE')
        job = master.popen('xivo-master-slave-db-replication', stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        assert wait_until(lambda: slave.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
            "'xivo-master-slave-db-replication' AND wait_event_type = 'Lock'") == '1', 60), \
            'the copy waits on the lock'
        record = served_record(slave)
        with open(record, 'w') as f:  # as failback.serving writes it
            json.dump({'episode': 'abc123', 'started_at': 1_800_000_000.0, 'ended_at': None}, f)
    finally:
        holder.rollback()
        holder.close()
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, out + err
    assert 'is left alone: it serves telephony since' in out, out
    assert forward(slave, user) == '1 0612345678', 'the copy was rolled back'
    with open(os.path.join(master.state_dir, 'replication.json')) as f:
        assert json.load(f)['result'] == 'held'


def test_a_hostile_slave_record_neither_crashes_the_master_nor_is_fetched_whole(pair):
    """Review of issue 25: the slave writes its record; a time beyond the C library's range
    (1e300) or a file of megabytes must not crash the master's wazo-sync nor its
    wazo-ha-status: the master says it cannot tell, and pushes nothing."""
    master, slave = pair
    configure(master, slave)
    assert replicate(master).returncode == 0
    record = served_record(slave)
    for bad, why in (({'episode': 'abc', 'started_at': 1e300, 'ended_at': None},
                      'started_at: not a time: 1e+300'),
                     ({'episode': 'abc', 'started_at': 1, 'pad': 'x' * 100_000},
                      'larger than 65536 bytes')):
        with open(record, 'w') as f:
            json.dump(bad, f)
        synced = master.wazo('wazo-sync', timeout=120)
        assert synced.returncode == 1, synced.stdout + synced.stderr
        assert 'cannot tell whether' in synced.stderr and why in synced.stderr, synced.stderr
        for args in ((), ('--json',), ('--write-summary',)):
            shown = master.wazo('wazo-ha-status', *args)
            assert 'unexpected error' not in shown.stdout + shown.stderr, shown.stderr
            assert shown.returncode in (0, 1, 2), shown.stdout + shown.stderr


def test_the_record_reads_of_one_run_share_one_ssh_connection(pair):
    """A run that copies reads the slave's failback record twice (before the copy, and again
    in its commit guard): both reads ride one SSH login, and that connection (its control
    socket in a private directory) ends with the run."""
    master, slave = pair
    master.psql(installation_sql(users=20, history=50))
    configure(master, slave)
    assert replicate(master).returncode == 0
    master.psql("UPDATE userfeatures SET firstname = firstname || 'x'")
    sshd_log = os.path.join(slave.root, 'sshd', 'sshd.log')
    with open(sshd_log) as f:
        before = f.read().count('Accepted publickey')
    result = replicate(master)
    assert 'tables copied' in result.stdout, result.stdout
    with open(sshd_log) as f:
        assert f.read().count('Accepted publickey') - before == 1, 'one login for both reads'
    assert wait_until(lambda: _shared_ssh_left(master) == [], 10), \
        f'the shared connection ended with the run: {_shared_ssh_left(master)}'


def _shared_ssh_left(node) -> list:
    """ssh processes (a control master) of a connection shared by a run's reads, in the node's
    namespace (other test files' runs may have theirs meanwhile)."""
    left = []
    for pid in sh('ip', 'netns', 'pids', node.ns, check=False).stdout.split():
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                argv = f.read().split(b'\0')
        except OSError:
            continue
        if argv[0].endswith(b'ssh') and any(b'/wazo-ha-ssh-' in a for a in argv):
            left.append(argv)
    return left
