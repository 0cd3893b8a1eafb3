"""xivo-manage-slave-services: the exact steps of failover and failback, idempotent."""

import os

import pytest

import baselines
from testbed import BIN_DIR, wait_until

START_CALLS = [
    'wazo-service status all',
    'xivo-create-config',
    'xivo-update-config',
    'dhcpd-update -dr',
    'systemctl start isc-dhcp-server',
    'systemctl enable isc-dhcp-server',
    'wazo-confgen asterisk/pjsip.conf --invalidate',
    'wazo-service enable',
    'wazo-service start',
    'wazo-agentd-cli -c relog all --timeout 60',
]
STOP_CALLS = [
    'wazo-service stop wazo',
    'wazo-service disable',
    'systemctl stop isc-dhcp-server',
    'systemctl disable isc-dhcp-server',
    'wazo-service start',
]


def configured_slave(_master, node):
    result = node.wazo('wazo-ha-config', 'set', '--node-type', 'slave', '--remote-address', '198.18.0.1')
    assert result.returncode == 0, result.stderr


@pytest.fixture
def slave(request):
    """A slave node (198.18.0.2, no PostgreSQL) configured as such; its master's node is idle.
    Shared: the NODES layout reset to this baseline before each test."""
    return baselines.shaped(request, baselines.NODES, 'slave-services', configured_slave)[1]


def manage(node, action):
    return node.wazo('xivo-manage-slave-services', action)


def test_start_runs_the_failover_steps_in_order(slave):
    result = manage(slave, 'start')
    assert result.returncode == 0, result.stderr
    assert slave.stand_in_calls() == START_CALLS
    assert slave.services_state() == 'all'
    assert not os.path.exists(slave.host_path('/var/lib/wazo/disabled'))
    assert 'started' in manage(slave, 'status').stdout


def test_start_twice_restarts_nothing(slave):
    manage(slave, 'start')
    calls = len(slave.stand_in_calls())
    result = manage(slave, 'start')
    assert result.returncode == 0
    assert 'already started' in result.stdout
    assert slave.stand_in_calls()[calls:] == ['wazo-service status all']


def test_stop_runs_the_failback_steps_and_stays_stopped_across_reboot(slave):
    manage(slave, 'start')
    calls = len(slave.stand_in_calls())
    result = manage(slave, 'stop')
    assert result.returncode == 0, result.stderr
    assert slave.stand_in_calls()[calls:] == STOP_CALLS
    assert slave.services_state() == 'base'
    assert os.path.exists(slave.host_path('/var/lib/wazo/disabled')), \
        'wazo-service disable keeps the units down at boot'
    again = manage(slave, 'stop')
    assert 'already stopped' in again.stdout
    status = manage(slave, 'status')
    assert status.stdout.startswith('slave services stopped since ')


def test_a_failing_auxiliary_step_does_not_keep_telephony_down(slave):
    with open(os.path.join(slave.root, 'stand-ins', 'dhcpd-update.rc'), 'w') as f:
        f.write('3')
    result = manage(slave, 'start')
    assert result.returncode == 0, 'only an auxiliary step failed: PUT /ha must not fail'
    assert 'refresh the DHCP phone prefixes' in result.stdout
    assert slave.services_state() == 'all', 'telephony started anyway'
    assert 'wazo-agentd-cli -c relog all --timeout 60' in slave.stand_in_calls()


@pytest.mark.fresh_testbed('a node of its own at 198.18.0.1')
@pytest.mark.parametrize('role', ['master', 'disabled', None])
def test_start_and_stop_work_on_any_role(bed, role):
    """As the original: wazo-sysconfd runs `start` whenever a node becomes master or
    disabled (wazo_sysconfd/plugins/ha_config/ha.py, _manage_services), and a non-zero exit
    fails its PUT /ha."""
    node = bed.add_node('node', 1, with_postgres=False)
    if role:
        args = ['--node-type', role] + (['--remote-address', '198.18.0.2'] if role == 'master' else [])
        assert node.wazo('wazo-ha-config', 'set', *args).returncode == 0
    calls = len(node.stand_in_calls())
    result = manage(node, 'stop')
    assert result.returncode == 0, result.stderr
    assert node.stand_in_calls()[calls:] == STOP_CALLS
    result = manage(node, 'start')
    assert result.returncode == 0, result.stderr
    assert node.services_state() == 'all'
    assert not os.path.exists(node.host_path('/var/lib/wazo/disabled'))


def test_start_of_running_services_still_disabled_at_boot_only_enables_them(slave):
    """Started by hand (or by wazo-upgrade's restart) while disabled: a reboot would leave
    telephony down, so start clears the boot flag and restarts nothing."""
    manage(slave, 'stop')
    with open(slave.services_state_file, 'w') as f:
        f.write('all\n')
    calls = len(slave.stand_in_calls())
    result = manage(slave, 'start')
    assert result.returncode == 0, result.stderr
    assert slave.stand_in_calls()[calls:] == ['wazo-service status all', 'wazo-service enable']
    assert not os.path.exists(slave.host_path('/var/lib/wazo/disabled'))


def test_bad_action_is_a_usage_error(slave):
    result = manage(slave, 'restart')
    assert result.returncode == 2
    assert 'invalid choice' in result.stderr


def test_a_start_and_a_stop_asked_at_once_never_interleave(slave):
    """The command takes its lock (so do the check and wazo-ha-config, through the same
    functions): wazo-sysconfd's `start` and a converging check's `stop` run one after the
    other, never step by step mixed."""
    slow = os.path.join(slave.root, 'stand-ins', 'wazo-confgen')
    with open(slow) as f:
        script = f.read()
    with open(slow, 'w') as f:  # the stand-in records, then takes its time
        f.write(script.replace('exit 0\n', 'sleep 1\nexit 0\n'))
    manage(slave, 'stop')
    calls = len(slave.stand_in_calls())
    first = slave.popen('/usr/bin/python3', os.path.join(BIN_DIR, 'xivo-manage-slave-services'),
                        'start')
    # the start holds the lock once its first step is recorded
    assert wait_until(lambda: len(slave.stand_in_calls()) > calls or first.poll() is not None)
    assert first.poll() is None, 'the start ended before the stop was asked'
    second = manage(slave, 'stop')
    assert first.wait(timeout=60) == 0 and second.returncode == 0, second.stderr
    made = [c for c in slave.stand_in_calls()[calls:] if c != 'wazo-service status all']
    started = [c for c in START_CALLS if c != 'wazo-service status all']
    assert made == started + STOP_CALLS, made
