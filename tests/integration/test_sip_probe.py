"""The SIP OPTIONS probe against a real SIP server (kamailio) in the master's namespace: the
master's machine answers ping all along; only its SIP service dies and comes back."""

import pytest

from check_helpers import check

SIP = {'sip_options': 'udp:5060 tcp:5060'}


@pytest.fixture
def sip_master(nodes):
    master, slave = nodes
    master.start_sip_server()
    try:
        yield master, slave
    finally:
        master.stop_sip_server()


def test_a_master_answering_sip_keeps_the_slave_on_standby(sip_master):
    master, slave = sip_master
    result = check(slave, run_for=3, **SIP)
    assert result.returncode == 0, result.stderr
    assert 'stays on standby' in result.stdout
    assert slave.services_state() == 'base'


def test_sip_dead_host_up_fails_over_then_back(sip_master):
    master, slave = sip_master
    assert check(slave, **SIP).returncode == 0
    master.stop_sip_server()  # Asterisk crashed; the machine still answers ping
    result = check(slave, run_for=6, **SIP)
    assert result.returncode == 0, result.stderr
    log = open(slave.log_file).read()
    assert 'no SIP answer to OPTIONS on udp:5060' in log
    assert 'no SIP answer to OPTIONS on tcp:5060' in log
    assert 'no ping reply' not in log
    assert 'taking over' in log
    assert slave.services_state() == 'all'

    master.start_sip_server()
    result = check(slave, run_for=7, **SIP)
    assert result.returncode == 0, result.stderr
    assert 'giving telephony back' in open(slave.log_file).read()
    assert slave.services_state() == 'base'


def test_only_the_configured_transport_is_asked(sip_master):
    master, slave = sip_master
    result = check(slave, run_for=3, sip_options='udp:5070')  # nothing listens there
    assert result.returncode == 0
    assert 'no SIP answer to OPTIONS on udp:5070' in result.stdout
