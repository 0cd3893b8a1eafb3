"""Runs by hand that start telephony beside a master that answers say so first: a slave made
disabled, and a hand-run check while the decision "master down" still stands."""

from check_helpers import check


def test_disabling_a_slave_whose_master_answers_warns_of_two_pbxs(nodes):
    master, slave = nodes
    result = slave.wazo('wazo-ha-config', 'set', '--node-type', 'disabled')
    assert result.returncode == 0, result.stderr
    assert (f'warning: the master {master.ip} answers: this node\'s telephony starts now beside '
            'it (two PBXs, trunks registered twice)') in result.stderr
    assert slave.services_state() == 'all', 'as PUT /ha does: disabled serves'


def test_disabling_a_slave_whose_master_is_gone_does_not_warn(nodes):
    master, slave = nodes
    master.link(up=False)
    result = slave.wazo('wazo-ha-config', 'set', '--node-type', 'disabled')
    assert result.returncode == 0, result.stderr
    assert 'warning' not in result.stderr


def test_a_hand_run_check_warns_before_starting_telephony_beside_an_answering_master(nodes):
    master, slave = nodes
    master.link(up=False)
    assert check(slave, run_for=6).returncode == 0
    assert slave.services_state() == 'all'
    slave.run('wazo-service', 'stop')      # the administrator stopped it meanwhile
    master.link(up=True)
    result = check(slave, run_for=0)        # one probe: the master answers, up_after not reached
    assert result.returncode == 0, result.stderr
    assert (f'warning: the master {master.ip} answers, but the decision "master down" stands'
            in result.stderr)
    assert slave.services_state() == 'all'


def test_a_hand_run_check_while_paused_says_it_still_acts(nodes):
    master, slave = nodes
    assert slave.wazo('wazo-ha-config', 'pause', '--wait', '0').returncode == 0
    result = check(slave)
    assert result.returncode == 0
    assert 'the HA cron jobs are paused, but this run by hand still starts or stops' in result.stderr
