"""The phones' view of a failover, against real SIP registrars: each node's telephony is Debian's
kamailio (tests/sip_registrar.py) started and stopped by the wazo-service stand-in, the phones
are tests/phone.py (Yealink's primary/backup behaviour, read from wazo-provd-plugins'
plugins/wazo_yealink/v86/templates/base.tpl, its timers scaled down)."""

import socket
import time

import pytest

from phone import Timers
from phones_helpers import Phones

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
