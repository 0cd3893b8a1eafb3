"""Root is mailed once per transition: the slave takes over (failover), gives telephony
back (failback); not every minute while it stays so."""

import email
import email.policy

from check_helpers import check


def mails(node, subject):
    out = []
    for text in node.mails():
        mail = email.message_from_string(text, policy=email.policy.default)
        if mail['Subject'].startswith(subject):
            out.append((mail['Subject'], mail.get_content()))
    return out


def test_a_failover_mails_once_and_so_does_the_failback(nodes):
    master, slave = nodes
    assert check(slave).returncode == 0
    assert mails(slave, 'Failover') == []
    master.link(up=False)
    assert check(slave, run_for=6).returncode == 0
    assert slave.services_state() == 'all'
    for _ in range(2):  # two more minutes of serving
        assert check(slave, run_for=1).returncode == 0
    failover = mails(slave, 'Failover: ')
    assert len(failover) == 1, failover
    subject, body = failover[0]
    assert ' serves telephony since ' in subject
    assert f'master {master.ip} silent since ' in subject
    assert 'an unknown time' not in subject, 'the last answer of the master is known'
    assert 'gives it back once the master answers again' in body

    master.link(up=True)
    assert check(slave, run_for=7).returncode == 0
    assert slave.services_state() == 'base'
    check(slave, run_for=1)
    failback = mails(slave, 'Failback: ')
    assert len(failback) == 1, failback
    assert f'gave telephony back to the master {master.ip} at ' in failback[0][0]
    assert len(mails(slave, 'Failover: ')) == 1


def test_a_slave_that_never_takes_over_mails_nothing(nodes):
    master, slave = nodes
    for _ in range(3):
        assert check(slave, run_for=1).returncode == 0
    assert slave.mails() == []
