"""The phones' view of a failover, against real SIP registrars: each node's telephony is Debian's
kamailio (tests/sip_registrar.py) started and stopped by the wazo-service stand-in, the phones
are tests/phone.py (Yealink's primary/backup behaviour, read from wazo-provd-plugins'
plugins/wazo_yealink/v86/templates/base.tpl, its timers scaled down)."""

import dataclasses
import json
import os
import re
import threading
import time

import pytest

from phone import Timers
from check_helpers import FAST
from check_helpers import configure_fast_slave
from phones_helpers import Phones
from sip_capture import Capture, sip_messages
from sipp_phones import SippPhones
from testbed import calls_after, wait_until
from wazo_ha_common.decisions.registrations import contacts_in

# Yealink's behaviour with every timer divided by 40 (fallback.timeout 120 s -> 3 s)
FAST_PHONE = Timers(expiry=3600, refresh_margin=1.5, t1=0.1, retry_counts=3,
                    fallback_timeout=3, reg_fail_retry_interval=1)
FAST_EXPIRY = {'min_expiry': 3, 'max_expiry': 6, 'default_expiry': 4}


def sip_answers(node, client, port=5060) -> bool:
    """An OPTIONS from `client` to the node's SIP port gets an answer within 1 s."""
    code = ('import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);'
            's.settimeout(1);s.sendto(b"OPTIONS sip:%s SIP/2.0\\r\\nVia: SIP/2.0/UDP %s:5098;'
            'branch=z9hG4bKo1;rport\\r\\nFrom: <sip:t@%s>;tag=1\\r\\nTo: <sip:%s>\\r\\nCall-ID: o1\\r\\n'
            'CSeq: 1 OPTIONS\\r\\nMax-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n",'
            '("%s",%d))\ntry: print(s.recv(2000).split(b"\\r\\n")[0].decode())\n'
            'except OSError: sys.exit(1)' % (node.ip, client.ip, client.ip, node.ip, node.ip, port))
    return client.run('/usr/bin/python3', '-c', code).returncode == 0


@pytest.fixture
def phones_node(bed):
    return bed.add_node('phones', 10, with_postgres=False)


def test_the_registrar_starts_and_stops_with_the_telephony(bed, phones_node):
    node = bed.add_node('master', 1, with_postgres=False)
    node.use_sip_registrar(delay=1)
    assert not sip_answers(node, phones_node)
    began = time.monotonic()
    assert node.run('wazo-service', 'start').returncode == 0
    assert time.monotonic() - began >= 1  # Asterisk's start-up delay, modelled
    assert node.registrar_running()
    assert sip_answers(node, phones_node)
    with Phones(phones_node, [node], 2, FAST_PHONE) as phones:
        for name in ('phone1', 'phone2'):
            phones.wait_for(lambda e, n=name: e.get('event') == 'registered'
                            and e['phone'] == n, 10, f'{name} registered')
        assert sorted(node.registered()) == ['phone1', 'phone2']
        # the registrar grants at most its maximum expiry (300 s), whatever the phone asks
        assert {e['expires'] for e in phones.events('registered')} == {300}
        contacts = node.run('asterisk', '-rx', 'pjsip show contacts').stdout
        assert contacts.count('Contact:  phone') == 2, contacts
        assert 'Contact:  trunk-operator/' in contacts, 'a trunk with a fixed contact'
        # what the failback counts: the phones' registrations, not the trunk's fixed contact
        astdb = node.run('asterisk', '-rx', 'database show registrar/contact').stdout
        assert contacts_in(astdb) == 2 and astdb.count('/registrar/contact/phone') == 2, astdb
    assert node.run('wazo-service', 'stop', 'wazo').returncode == 0
    assert not node.registrar_running()
    assert not sip_answers(node, phones_node)
    result = node.run('asterisk', '-rx', 'pjsip show contacts')
    assert result.returncode == 1 and 'Unable to connect' in result.stdout
    # disabled (a standby slave): wazo-service start brings the base services only
    node.run('wazo-service', 'disable')
    node.run('wazo-service', 'start')
    assert not node.registrar_running()


def test_a_phone_fails_over_to_the_backup_registrar_and_returns(bed, phones_node):
    master = bed.add_node('master', 1, with_postgres=False)
    slave = bed.add_node('slave', 2, with_postgres=False)
    for node in (master, slave):
        node.use_sip_registrar(**FAST_EXPIRY)
        node.run('wazo-service', 'start')
    with Phones(phones_node, [master, slave], 1, FAST_PHONE, call_in_every=0.5) as phones:
        phones.wait_for(lambda e: e.get('event') == 'registered' and e['server'] == master.ip,
                        10, 'registered on the master')
        assert master.registered() == ['phone1'] and slave.registered() == []
        master.link(False)  # the master dies silently
        cut = time.time()
        moved = phones.wait_for(lambda e: e.get('event') == 'registered' and e['t'] > cut
                                and e['server'] == slave.ip, 15, 'registered on the backup')
        # not before its registration was due again: the phone cannot know sooner
        assert moved['t'] - cut <= 6 + FAST_PHONE.request_timeout + 1
        assert slave.registered() == ['phone1']
        phones.wait_for(lambda e: e.get('event') == 'call in' and e['t'] > moved['t']
                        and e['via'] == slave.ip, 5, 'a call in through the backup')

        master.link(True)
        back = time.time()
        returned = phones.wait_for(lambda e: e.get('event') == 'registered' and e['t'] > back
                                   and e['server'] == master.ip, 15, 'back on the primary')
        assert returned['purpose'] == 'probe'  # fallback.timeout, not a failure, brought it
        assert returned['t'] - back <= FAST_PHONE.fallback_timeout + 1
        assert master.registered() == ['phone1']
        phones.wait_for(lambda e: e.get('event') == 'call in' and e['t'] > returned['t']
                        and e['via'] == master.ip, 5, 'a call in through the master')


COUNT = 'asterisk -rx database show registrar/contact'


# --- the failback waits for the phones ---------------------------------------------------

def run_check(slave, run_for: float, sip=None, **check):
    """One run of the check on the slave, fast detection (check_helpers.FAST)."""
    slave.write_settings(check={**FAST['check'], 'run_for': str(run_for), **check},
                         **({'sip': sip} if sip else {}))
    result = slave.wazo('xivo-check-master-status', timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def failed_over(master, slave):
    run_check(slave, 0)
    master.link(False)
    run_check(slave, 6)
    assert slave.services_state() == 'all'


def master_back_after_a_failover(master, slave, contacts: str) -> float:
    """The slave took over; the asterisk stand-in then answers with these counts of registered
    contacts, a line a question (testbed.ASTERISK_BEHAVIOUR); the master's link is back. When
    it came back (time.time(), taken just before)."""
    failed_over(master, slave)
    with open(slave.asterisk_contacts_file, 'w') as f:
        f.write(contacts)
    back = time.time()
    master.link(True)
    return back


def stop_after_last_count(slave) -> None:
    calls = slave.stand_in_calls()
    last_stop = max(i for i, c in enumerate(calls) if c == 'wazo-service stop wazo')
    asked = [i for i, c in enumerate(calls) if c == COUNT]
    assert asked and last_stop > max(asked), 'the telephony stopped after the last count'


def test_failback_waits_for_the_phones_then_stops(nodes):
    """The asterisk stand-in (testbed.ASTERISK_BEHAVIOUR) lists 2 registered contacts, then 2,
    1, none, as Asterisk's `database show registrar/contact` (main/db.c; res_pjsip/location.c
    keeps them in astdb), a trunk's fixed contact only in `pjsip show contacts`."""
    master, slave = nodes
    master_back_after_a_failover(master, slave, '2\n2\n1\n0\n')
    run_check(slave, 10)
    log = open(slave.log_file).read()
    assert 'failback phones: waited' in log and 'for 2 phones to register on the master ' \
        'again: none left here' in log, log
    assert slave.services_state() == 'base'
    stop_after_last_count(slave)


def test_failback_gives_up_waiting_for_the_phones_at_its_bound(nodes):
    """3 contacts that never leave; [check] failback_phones_timeout 2 s + margin 1 s: stops
    3 s after the decision "master up" (looked at every probe, 1 s)."""
    master, slave = nodes
    master_back_after_a_failover(master, slave, '3\n')
    run_check(slave, 10, failback_phones_timeout='2', failback_phones_margin='1')
    log = open(slave.log_file).read()
    found = re.search(r'failback phones: waited (\d+) s \(the limit, \[check\] '
                      r'failback_phones_timeout \+ failback_phones_margin = 3 s\) for 3 phones: '
                      r'3 still registered here', log)
    assert found and 3 <= int(found.group(1)) <= 5, log
    assert slave.services_state() == 'base'
    stop_after_last_count(slave)


def test_the_bound_of_the_wait_holds_across_runs(nodes):
    """The first run decides "master up" and begins the wait, then ends (run_for); the next
    run goes on with the same wait (kept in the check's state) and stops at its bound counted
    from the first run, not from its own start. The second run starts 4.5 s after the wait
    began (the test pauses between the runs, as cron leaves a gap between two runs): the bound
    then falls 2.5 s into the second run, far from the 7 s that a bound counted from the run's
    own start would give, whatever the load."""
    master, slave = nodes
    master_back_after_a_failover(master, slave, '3\n')
    run_check(slave, 6, failback_phones_timeout='7', failback_phones_margin='0')
    assert slave.services_state() == 'all', 'still waiting at the end of the first run'
    log = open(slave.log_file).read()
    assert 'failback phones: 3 registered here: the telephony stops once none is left, at ' \
        'most 7 s from now' in log, log
    with open(os.path.join(slave.state_dir, 'check.json')) as f:
        began = json.load(f)['failback_phones']['began']
    time.sleep(max(0.0, began + 4.5 - time.time()))
    second = time.time()
    run_check(slave, 9, failback_phones_timeout='7', failback_phones_margin='0')
    log = open(slave.log_file).read()
    found = re.search(r'failback phones: waited (\d+) s \(the limit', log)
    assert found and 7 <= int(found.group(1)) <= 9, log
    assert log.count('failback phones: 3 registered here') == 1, 'one wait, not two'
    with open(os.path.join(slave.state_dir, 'check.json')) as f:
        assert 'failback_phones' not in json.load(f), 'the wait is over'
    stopped = [float(line.split()[0]) for line in slave.stand_in_calls(timestamps=True)
               if line.split(' ', 1)[1] == 'wazo-service stop wazo' and
               float(line.split()[0]) > second]
    assert stopped and stopped[0] - second < 7, 'stopped before 7 s of its own run'
    assert slave.services_state() == 'base'


def test_a_master_dying_during_the_wait_keeps_the_slave_serving(nodes):
    """3 contacts that never leave; the master's link is cut again while the slave waits for
    them: once the health rule decides it down (down_after, not one lost probe), the wait
    ends and the slave does not stop its telephony (nobody would serve)."""
    master, slave = nodes
    back = master_back_after_a_failover(master, slave, '3\n')
    # the decision "up" comes after up_after (4 s); "down" again 3 s after the cut (down_after)
    cut = threading.Timer(7, master.link, args=(False,))
    cut.start()
    try:
        run_check(slave, 14, failback_phones_timeout='30')
    finally:
        cut.cancel()
        cut.join()
    log = open(slave.log_file).read()
    assert re.search(r'failback phones: the master is down again after \d+ s of waiting for 3 '
                     r'phones: wait ended, telephony NOT stopped', log), log
    assert slave.services_state() == 'all'
    assert calls_after(slave, 'wazo-service stop wazo', back) == []
    assert calls_after(slave, COUNT, back), 'it was waiting'
    with open(os.path.join(slave.state_dir, 'check.json')) as f:
        assert 'failback_phones' not in json.load(f), 'the wait is over'


def test_failback_does_not_wait_when_turned_off(nodes):
    master, slave = nodes
    master_back_after_a_failover(master, slave, '3\n')
    run_check(slave, 7, failback_phones='false')
    assert slave.services_state() == 'base'
    assert COUNT not in slave.stand_in_calls()
    assert 'failback phones' not in open(slave.log_file).read()


def test_no_phone_is_unreachable_at_failback(bed):
    """Real registrars on both nodes, 3 phones: they fail over to the slave; when the master is
    back, the slave stops only once none is registered on it any more (they went back to the
    master at their fallback.timeout and their registrations on the slave expired)."""
    # the phones' node on the same bridge as the pair: a testbed of the test's own
    master = bed.add_node('master', 1, with_postgres=False)
    slave = bed.add_node('slave', 2, with_postgres=False)
    configure_fast_slave(master, slave)
    phones_node = bed.add_node('phones', 10, with_postgres=False)
    for node in (master, slave):
        node.use_sip_registrar(**FAST_EXPIRY)
    master.run('wazo-service', 'start')
    sip = {k: str(v) for k, v in FAST_EXPIRY.items()}
    run_check(slave, 0, sip=sip)
    # back to the primary only after the slave has decided to give telephony back
    timers = dataclasses.replace(FAST_PHONE, fallback_timeout=8)
    with Phones(phones_node, [master, slave], 3, timers, spread=2) as phones:
        for n in (1, 2, 3):
            phones.wait_for(lambda e, n=n: e.get('event') == 'registered'
                            and e['phone'] == f'phone{n}', 10, f'phone{n} registered')
        master.link(False)
        run_check(slave, 6, sip=sip)
        assert slave.registrar_running()
        deadline = time.monotonic() + 20
        while len(slave.registered()) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sorted(slave.registered()) == ['phone1', 'phone2', 'phone3']

        master.link(True)
        # runs follow one another as cron's do: the wait goes on across them
        for _ in range(4):
            run_check(slave, 7, sip=sip, failback_phones_timeout='8', failback_phones_margin='10')
            if slave.services_state() == 'base':
                break
        stopped = max(float(line.split()[0]) for line in slave.stand_in_calls(timestamps=True)
                      if line.split(' ', 1)[1] == 'wazo-service stop wazo')
        log = open(slave.log_file).read()
        assert 'for 3 phones to register on the master again: none left here' in log, log
        assert not slave.registrar_running()
        for n in (1, 2, 3):
            last = [e for e in phones.events('registered', f'phone{n}') if e['t'] < stopped][-1]
            assert last['server'] == master.ip, f'phone{n} was still on the slave at its stop'
        assert sorted(master.registered()) == ['phone1', 'phone2', 'phone3']


def test_sipp_phones_fail_over_to_the_backup_and_return(bed, phones_node):
    """The cross-check's phones (tests/sipp_phones.py: SIPp, Debian's sip-tester, running the
    same primary/backup behaviour) register, move to the backup when the master dies, are
    called there, and return to the primary."""
    master = bed.add_node('master', 1, with_postgres=False)
    slave = bed.add_node('slave', 2, with_postgres=False)
    for node in (master, slave):
        node.use_sip_registrar(**FAST_EXPIRY)
        node.run('wazo-service', 'start')
    names = ['sipp1', 'sipp2']
    with SippPhones(phones_node, [master, slave], 2, FAST_PHONE, spread=1) as sipp, \
            Phones(phones_node, [master, slave], 0, FAST_PHONE, call_in_every=0.5,
                   call_users=names) as caller:
        def on(node):
            return sorted(node.registered()) == names
        assert wait_until(lambda: on(master), 10), 'registered on the master'
        # they renew before the expiry the registrar granted (SIPp's reading of its answer):
        # still registered after twice the granted maximum, each renewed at least once and no
        # more often than every half granted expiry (3 s: 12 s hold at most 4 renewals + 1)
        capture = Capture(bed, os.path.join(bed.workdir, 'sipp-renewals.pcap'))
        try:
            time.sleep(2 * FAST_EXPIRY['max_expiry'])
        finally:
            capture.close()
        assert on(master) and sipp.alive(), 'the registrations were not renewed'
        renewals = [m.call_id for m in sip_messages(capture.path)
                    if m.method == 'REGISTER' and m.dst[0] == master.ip]
        assert len(set(renewals)) == 2 and all(1 <= renewals.count(c) <= 5
                                                for c in set(renewals)), renewals
        master.link(False)
        assert wait_until(lambda: on(slave), 6 + FAST_PHONE.request_timeout + 3), \
            'moved to the backup'
        assert sipp.alive()
        moved = time.time()

        def called_through_the_backup():  # (every phone called through each server each 0.5 s)
            return {e['phone'] for e in caller.events() if e.get('event') == 'call in answered'
                    and e['t'] > moved and e['via'] == slave.ip} == set(names)
        assert wait_until(called_through_the_backup, 5), 'called through the backup'
        # their registrations on the dead master expire there (it knows them no more)
        assert wait_until(lambda: master.registered() == [], FAST_EXPIRY['max_expiry'] + 2)
        master.link(True)
        assert wait_until(lambda: on(master),
                          FAST_PHONE.fallback_timeout + FAST_PHONE.request_timeout + 3), \
            'back on the primary'
        assert sipp.alive()
