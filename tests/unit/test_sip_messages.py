"""The SIP OPTIONS request and what counts as an answer (the probe itself runs against a
real SIP server in tests/integration/test_sip_probe.py)."""

import pytest

from wazo_ha_common.adapters.probes import is_sip_response, sip_request
from wazo_ha_common.settings import SipTargets

CALL_ID = 'abc123@wazo-ha'


def test_the_request_has_what_rfc_3261_requires():
    text = sip_request('198.18.0.1', 5060, 'udp', ('198.18.0.2', 40000), CALL_ID,
                       'z9hG4bKdeadbeef', 'f00d').decode()
    head, _, body = text.partition('\r\n\r\n')
    lines = head.split('\r\n')
    assert lines[0] == 'OPTIONS sip:198.18.0.1:5060;transport=udp SIP/2.0'
    assert 'Via: SIP/2.0/UDP 198.18.0.2:40000;branch=z9hG4bKdeadbeef;rport' in lines
    assert 'Max-Forwards: 70' in lines
    assert 'From: <sip:wazo-ha@198.18.0.2>;tag=f00d' in lines
    assert 'To: <sip:198.18.0.1:5060>' in lines
    assert f'Call-ID: {CALL_ID}' in lines
    assert 'CSeq: 1 OPTIONS' in lines
    assert 'Content-Length: 0' in lines and body == ''


def test_tcp_requests_say_so_in_the_via():
    text = sip_request('198.18.0.1', 5060, 'tcp', ('198.18.0.2', 40000), CALL_ID, 'z9hG4bK1',
                       't').decode()
    assert 'Via: SIP/2.0/TCP 198.18.0.2:40000;' in text


@pytest.mark.parametrize('status', ['200 OK', '404 Not Found', '100 Trying', '503 Busy'])
def test_any_sip_status_is_an_answer(status):
    reply = f'SIP/2.0 {status}\r\nVia: x\r\nCall-ID: {CALL_ID}\r\nCSeq: 1 OPTIONS\r\n\r\n'
    assert is_sip_response(reply.encode(), CALL_ID)


def test_compact_call_id_header_counts():
    assert is_sip_response(f'SIP/2.0 200 OK\r\ni: {CALL_ID}\r\n\r\n'.encode(), CALL_ID)


@pytest.mark.parametrize('reply', [
    b'HTTP/1.1 200 OK\r\n\r\n',
    b'OPTIONS sip:x SIP/2.0\r\nCall-ID: abc123@wazo-ha\r\n\r\n',
    b'SIP/2.0 200 OK\r\nCall-ID: someone-else\r\n\r\n',
    b'garbage',
])
def test_what_is_not_an_answer_to_our_request(reply):
    assert not is_sip_response(reply, CALL_ID)


def test_sip_targets_setting():
    assert SipTargets().parse('udp:5060 TCP:5061, udp:5060') == (('udp', 5060), ('tcp', 5061))
    assert SipTargets().parse('') == ()
    for bad in ('5060', 'tls:5061', 'udp:', 'udp:70000'):
        with pytest.raises(ValueError):
            SipTargets().parse(bad)
