"""xivo-check-master-status on a slave node probing a master node with real ping.

`nodes`: a shared testbed reset to its baseline before each test; tests marked
fresh_testbed get one of their own."""

import json
import os
import subprocess
import threading
import time

import pytest

from check_helpers import check


def memory(slave):
    with open(os.path.join(slave.state_dir, 'check.json')) as f:
        return json.load(f)


@pytest.mark.fresh_testbed('a third node of its own')
def test_not_a_secondary_does_nothing(bed):
    node = bed.add_node('other', 3, with_postgres=False)
    result = node.wazo('xivo-check-master-status')
    assert result.returncode == 0, result.stderr
    assert 'not a slave' in result.stdout and 'nothing done' in result.stdout
    assert node.stand_in_calls() == []


def test_master_up_keeps_the_slave_stopped_even_after_an_upgrade_started_it(nodes):
    master, slave = nodes
    slave.run('wazo-service', 'enable')
    slave.run('wazo-service', 'restart')  # what wazo-upgrade does on every node
    assert slave.services_state() == 'all'
    result = check(slave)
    assert result.returncode == 0, result.stderr
    assert 'stays on standby' in result.stdout
    assert slave.services_state() == 'base'
    assert os.path.exists(slave.host_path('/var/lib/wazo/disabled'))
    calls = len(slave.stand_in_calls())
    check(slave)
    assert slave.stand_in_calls()[calls:] == ['wazo-service status all'], 'nothing restarted'


def test_master_dies_then_returns_failover_then_failback(nodes):
    master, slave = nodes
    assert check(slave).returncode == 0
    master.link(up=False)
    result = check(slave, run_for=6)
    assert result.returncode == 0, result.stderr
    assert 'taking over' in open(slave.log_file).read()
    assert slave.services_state() == 'all'
    assert memory(slave)['decision'] == 'down'
    master.link(up=True)
    result = check(slave, run_for=7)
    assert 'giving telephony back' in open(slave.log_file).read()
    assert slave.services_state() == 'base'
    assert memory(slave)['decision'] == 'up'


def test_detection_carries_over_between_cron_runs(nodes):
    master, slave = nodes
    check(slave)
    master.link(up=False)
    for _ in range(3):  # three short runs, one probe each, like cron minutes
        check(slave, run_for=0)
    assert memory(slave)['failures'] == 3
    result = check(slave, run_for=0)
    assert slave.services_state() == 'all', result.stdout


@pytest.mark.fresh_testbed('adds a witness node')
def test_witness_silent_too_means_no_failover(bed, nodes):
    master, slave = nodes
    bed.add_node('witness', 3, with_postgres=False)
    check(slave, witness='198.18.0.3')
    slave.link(up=False)  # the slave is the one cut off: master and witness both silent
    result = check(slave, run_for=6, witness='198.18.0.3')
    assert result.returncode == 0
    assert 'does NOT take over' in result.stdout
    assert slave.services_state() == 'base'


@pytest.mark.fresh_testbed('adds a witness node')
def test_witness_answering_lets_the_slave_take_over(bed, nodes):
    master, slave = nodes
    bed.add_node('witness', 3, with_postgres=False)
    check(slave, witness='198.18.0.3')
    master.link(up=False)
    check(slave, run_for=6, witness='198.18.0.3')
    assert slave.services_state() == 'all'


def test_tcp_probe_makes_a_dead_telephony_stack_count_as_down(nodes):
    master, slave = nodes
    server = master.popen('python3', '-c', 'import socket,time\n'
                          's=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n'
                          's.bind(("198.18.0.1", 5060)); s.listen(); print("listening", flush=True)\n'
                          'time.sleep(600)', stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline() == 'listening\n', 'the listener on 5060 did not start'
        check(slave, tcp_ports='5060')
        assert slave.services_state() == 'base'
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    result = check(slave, run_for=6, tcp_ports='5060')  # ping answers, port 5060 closed
    assert 'TCP 5060 closed' in result.stdout + open(slave.log_file).read()
    assert slave.services_state() == 'all'


def test_sentinel_removed_during_the_run_stops_before_acting(nodes):
    master, slave = nodes
    check(slave)
    master.link(up=False)
    sentinel = slave.host_path('/var/lib/wazo/is-secondary')
    threading.Timer(2.0, os.unlink, [sentinel]).start()
    result = check(slave, run_for=8)
    assert result.returncode == 0
    assert 'stopped being a secondary' in result.stdout
    assert slave.services_state() == 'base', 'HA disabled meanwhile: nothing started'


@pytest.mark.parametrize('argument, message', [
    ('master.example.org', 'not an IP address'),
    ('198.18.0.2', 'address of this node'),
    ('198.18.0.1 ; reboot', 'not an IP address'),
    ('198.18.0.7', 'is not the master configured'),
])
def test_bad_arguments(nodes, argument, message):
    master, slave = nodes
    result = check(slave, argument)
    assert result.returncode == 2
    assert message in result.stderr
    assert slave.stand_in_calls() == []


def test_a_second_run_leaves(nodes):
    master, slave = nodes
    with slave.lock_held('xivo-check-master-status'):
        result = check(slave)
        assert result.returncode == 1
        assert 'another xivo-check-master-status is running' in result.stderr


def write_memory(slave, **fields):
    """check.json as a run of this boot wrote it a second ago, with these fields."""
    with open('/proc/sys/kernel/random/boot_id') as f:
        boot = f.read().strip()
    now = time.monotonic()
    stored = {'master': '198.18.0.1', 'decision': 'down', 'decided_at': now - 30, 'boot': boot,
              'last_probe': now - 1, 'last_answer': None, 'answering_since': None,
              'failing_since': now - 30, 'failures': 6, **fields}
    os.makedirs(slave.state_dir, exist_ok=True)
    with open(os.path.join(slave.state_dir, 'check.json'), 'w') as f:
        json.dump(stored, f)


def test_a_down_decision_about_another_master_does_not_start_telephony(nodes):
    master, slave = nodes
    write_memory(slave, master='198.18.0.9')  # this node watched another master before
    result = check(slave)
    assert result.returncode == 0, result.stderr
    assert 'stays on standby' in result.stdout
    assert slave.services_state() == 'base'
    assert 'xivo-create-config' not in slave.stand_in_calls(), 'no failover step ran'
    assert 'now watches 198.18.0.1' in open(slave.log_file).read()
    assert memory(slave)['master'] == master.ip and memory(slave)['decision'] == 'up'


def test_a_node_made_slave_again_forgets_its_old_down_decision(nodes):
    master, slave = nodes
    write_memory(slave)  # "master down", about this very master
    for node_type in ('master', 'slave'):  # promoted, then made a slave again
        result = slave.wazo('wazo-ha-config', 'set', '--node-type', node_type,
                            '--remote-address', master.ip)
        assert result.returncode == 0, result.stderr
        if node_type == 'master':
            assert 'failover memory dropped' in result.stdout + open(slave.log_file).read()
    assert slave.services_state() == 'all', 'a master serves calls'
    result = check(slave)
    assert result.returncode == 0, result.stderr
    assert 'stays on standby' in result.stdout
    assert slave.services_state() == 'base'
    assert memory(slave)['decision'] == 'up'


def test_a_memory_with_a_wrong_type_gives_a_fresh_start_and_a_warning(nodes):
    master, slave = nodes
    write_memory(slave, last_probe='5')
    for _ in range(2):
        result = check(slave)
        assert result.returncode == 0, result.stderr
        assert 'stays on standby' in result.stdout
    log = open(slave.log_file).read()
    assert log.count('is not a valid failover memory (last_probe') == 1, log
    assert isinstance(memory(slave)['last_probe'], float)
    status = slave.wazo('wazo-ha-status', '--json')
    assert json.loads(status.stdout)['decision']['decision'] == 'up'


def test_a_failed_failover_step_exits_1_mails_root_once_and_is_retried(nodes):
    master, slave = nodes
    assert check(slave).returncode == 0
    broken = os.path.join(slave.root, 'stand-ins', 'xivo-create-config.rc')
    with open(broken, 'w') as f:
        f.write('1\n')
    master.link(up=False)
    result = check(slave, run_for=6)
    assert result.returncode == 1, result.stdout
    assert 'failover failed on' in result.stderr
    assert 'apply the replicated configuration' in result.stderr
    assert slave.services_state() == 'all', 'the other steps still ran'
    mails = [' '.join(m.split()) for m in slave.mails()]
    assert len(mails) == 1 and 'Subject: Failover failed on ' in mails[0], mails
    assert 'apply the replicated configuration: xivo-create-config failed with exit status 1' \
        in mails[0]
    status = slave.wazo('wazo-ha-status', '--json')
    assert status.returncode == 2
    assert any(w.startswith('CRITICAL: failover failed') for w in json.loads(status.stdout)['warnings'])

    calls = len(slave.stand_in_calls())
    result = check(slave)  # next minute: still broken, tried again, not mailed again
    assert result.returncode == 1
    assert slave.stand_in_calls()[calls:].count('xivo-create-config') == 1
    assert len(slave.mails()) == 1

    os.unlink(broken)  # repaired: the next run does the missing step and is done
    calls = len(slave.stand_in_calls())
    result = check(slave)
    assert result.returncode == 0, result.stderr
    assert slave.stand_in_calls()[calls:].count('xivo-create-config') == 1
    assert 'wazo-service start' not in slave.stand_in_calls()[calls:], 'nothing restarted'
    status = slave.wazo('wazo-ha-status', '--json')
    assert status.returncode == 1, 'failover (warning), no longer critical'
    assert not any(w.startswith('CRITICAL') for w in json.loads(status.stdout)['warnings'])
    calls = len(slave.stand_in_calls())
    assert check(slave).returncode == 0
    assert 'xivo-create-config' not in slave.stand_in_calls()[calls:], 'converged: not again'
    # review of issue 25: the failover that succeeded on a retry is announced, once
    mails = [' '.join(m.split()) for m in slave.mails()]
    announced = [m for m in mails if 'Subject: Failover: slave ' in m]
    assert len(mails) == 2 and len(announced) == 1, mails
    assert ' serves telephony since ' in announced[0]
    master.link(up=True)


def fail_over(master, slave):
    assert check(slave).returncode == 0
    master.link(up=False)
    assert check(slave, run_for=6).returncode == 0
    assert slave.services_state() == 'all'
    master.link(up=True)


def fail_back_with_calls(nodes, counts, drain):
    """A failed-over slave whose asterisk stand-in answers `counts` (one a line, the last one
    repeated), then a check run with [check] failback_drain = drain, as the master is back."""
    master, slave = nodes
    fail_over(master, slave)
    with open(slave.asterisk_calls_file, 'w') as f:
        f.write(counts)
    result = check(slave, run_for=7, failback_drain=drain)
    assert result.returncode == 0, result.stderr
    return slave


def test_failback_drain_waits_for_the_calls_to_end(nodes):
    """Calls counted by the asterisk stand-in (testbed.ASTERISK_BEHAVIOUR: replays the output
    of Asterisk's `core show channels count`, main/cli.c): 2 calls, then 1, then none."""
    slave = fail_back_with_calls(nodes, '2\n1\n0\n', drain='60')
    log = open(slave.log_file).read()
    assert 'failback drain: waited' in log and 'for 2 calls to end: none cut' in log, log
    assert 'asterisk -rx core show channels count' in slave.stand_in_calls()
    assert slave.services_state() == 'base'
    calls = slave.stand_in_calls()
    last_stop = max(i for i, c in enumerate(calls) if c == 'wazo-service stop wazo')
    assert last_stop > max(i for i, c in enumerate(calls) if c.startswith('asterisk')), \
        'stopped after the drain'


def test_failback_drain_gives_up_and_says_how_many_calls_are_cut(nodes):
    """Same stand-in as above: 3 calls that never end."""
    slave = fail_back_with_calls(nodes, '3\n', drain='2')
    assert 'failback_drain 2 s) for 3 calls: 3 still up, cut by the stop' in open(slave.log_file).read()
    assert slave.services_state() == 'base'


def test_no_drain_by_default(nodes):
    master, slave = nodes
    fail_over(master, slave)
    with open(slave.asterisk_calls_file, 'w') as f:
        f.write('3\n')
    assert check(slave, run_for=7).returncode == 0
    assert slave.services_state() == 'base'
    assert not any(c.startswith('asterisk -rx core show channels') for c in slave.stand_in_calls())
    assert 'failback drain' not in open(slave.log_file).read()


@pytest.mark.parametrize('damage', ['deleted', 'corrupt'])
def test_a_memory_lost_while_serving_keeps_telephony_until_the_master_answered_up_after(nodes, damage):
    """Issue 24: a check.json deleted or corrupt while the slave serves must not stop the
    telephony at the master's first answer (up_after is 4 s in these tests)."""
    master, slave = nodes
    assert check(slave).returncode == 0
    master.link(up=False)
    assert check(slave, run_for=6).returncode == 0
    assert slave.services_state() == 'all', 'failed over'
    path = os.path.join(slave.state_dir, 'check.json')
    if damage == 'deleted':
        os.unlink(path)
    else:
        with open(path, 'w') as f:
            f.write('{"decision": "down", "failures": ')
    master.link(up=True)
    result = check(slave, run_for=0)  # one probe: the master answers
    assert result.returncode == 0, result.stderr
    assert slave.services_state() == 'all', 'telephony kept: the memory was in doubt'
    assert memory(slave)['decision'] == 'down'
    assert 'while the telephony runs here' in open(slave.log_file).read()
    result = check(slave, run_for=6)
    assert result.returncode == 0, result.stderr
    assert 'giving telephony back' in open(slave.log_file).read()
    assert slave.services_state() == 'base'


def test_a_memory_in_doubt_keeps_telephony_but_opens_no_episode(nodes):
    """Review of issue 24: telephony runs here (started by hand) and the memory is lost; the
    master is silent for one probe: telephony is kept, but no failback episode is opened (the
    master's next wazo-sync would bring the whole spool back) until the probes decide."""
    master, slave = nodes
    assert check(slave).returncode == 0
    with open(slave.services_state_file, 'w') as f:
        f.write('all\n')
    os.unlink(os.path.join(slave.state_dir, 'check.json'))
    master.link(up=False)
    result = check(slave, run_for=0)
    assert result.returncode == 0, result.stderr
    assert slave.services_state() == 'all'
    record = os.path.join(slave.root, 'failback-record', 'served.json')
    assert not os.path.exists(record), 'no episode'
    result = check(slave, run_for=6)
    assert result.returncode == 0, result.stderr
    with open(record) as f:
        assert json.load(f)['ended_at'] is None, 'the probes decided: an episode opens'


def test_the_check_leaves_the_rsync_daemon_configuration_to_the_converge(nodes):
    """One writer: the converge (every minute) writes rsyncd.conf; the check only probes."""
    master, slave = nodes
    converged = slave.wazo('wazo-ha-config', 'converge')
    assert converged.returncode == 0, converged.stderr
    conf = slave.host_path('/etc/wazo-ha/rsyncd.conf')
    with open(conf, 'a') as f:
        f.write('# not what the settings say\n')
    with open(conf) as f:
        edited = f.read()
    assert check(slave).returncode == 0
    with open(conf) as f:
        assert f.read() == edited, 'the check does not write the rsync daemon configuration'
    converged = slave.wazo('wazo-ha-config', 'converge')
    assert converged.returncode == 0, converged.stderr
    with open(conf) as f:
        assert '# not what the settings say' not in f.read(), 'the converge puts it right'
