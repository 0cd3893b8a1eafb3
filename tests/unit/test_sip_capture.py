"""Reading a capture of the bridge (tests/sip_capture.py): pcap framing, call attempts, and how
long they failed."""

import socket
import struct

from sip_capture import attempts, failed_time, first_from, last_from, sip_messages


def frame(src, dst, text: str) -> bytes:
    payload = text.replace('\n', '\r\n').encode()
    udp = struct.pack('>HHHH', src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0,
                     socket.inet_aton(src[0]), socket.inet_aton(dst[0])) + udp
    return b'\x02' * 6 + b'\x04' * 6 + b'\x08\x00' + ip


def pcap(path, packets) -> str:
    """A pcap file (microsecond, Ethernet) of (time, src, dst, text) packets."""
    with open(path, 'wb') as f:
        f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
        for t, src, dst, text in packets:
            data = frame(src, dst, text)
            f.write(struct.pack('<IIII', int(t), int(round((t % 1) * 1e6)), len(data), len(data)))
            f.write(data)
    return str(path)


CALLER, MASTER, SLAVE, PHONE = ('198.18.0.10', 5099), ('198.18.0.1', 5060), \
    ('198.18.0.2', 5060), ('198.18.0.10', 5101)


def invite(call_id):
    return f'INVITE sip:phone1@x SIP/2.0\nCall-ID: {call_id}\nCSeq: 1 INVITE\n\n'


def answer(call_id, status='200 OK'):
    return f'SIP/2.0 {status}\nCall-ID: {call_id}\nCSeq: 1 INVITE\n\n'


def test_calls_into_a_phone_fail_from_the_first_failure_to_the_next_success(tmp_path):
    packets = [
        (100.0, CALLER, MASTER, invite('in-phone1-1-198.18.0.1')),
        (100.1, CALLER, SLAVE, invite('in-phone1-1-198.18.0.2')),
        (100.2, MASTER, CALLER, answer('in-phone1-1-198.18.0.1')),   # round 1 works
        (102.0, CALLER, SLAVE, invite('in-phone1-2-198.18.0.2')),    # the master is gone
        (104.0, CALLER, SLAVE, invite('in-phone1-3-198.18.0.2')),
        (104.1, SLAVE, CALLER, answer('in-phone1-3-198.18.0.2', '404 Not Found')),
        (106.0, CALLER, SLAVE, invite('in-phone1-4-198.18.0.2')),
        (106.1, SLAVE, PHONE, invite('in-phone1-4-198.18.0.2')),
        (106.2, PHONE, SLAVE, answer('in-phone1-4-198.18.0.2')),
        (106.3, SLAVE, CALLER, answer('in-phone1-4-198.18.0.2')),    # through the slave
        (108.0, CALLER, SLAVE, invite('in-phone1-5-198.18.0.2')),    # the slave stopped
        (108.5, PHONE, SLAVE, invite('out-phone1-1-ab12')),           # its own call
        (108.9, SLAVE, PHONE, answer('out-phone1-1-ab12')),
        # placed at 109.0 (its Call-ID says so), to the dead master first: only its INVITE to
        # the backup crossed the bridge, 7.5 s later, unanswered
        (116.5, PHONE, SLAVE, invite('out-phone1-2-109000')),
    ]
    messages = sip_messages(pcap(tmp_path / 'c.pcap', packets))
    assert len(messages) == len(packets)
    calls_in = attempts(messages, 'in')
    assert [ok for _, ok in calls_in['phone1']] == [True, False, False, True, False]
    assert calls_in['phone1'][0][0] == 100.0, 'an attempt is timed by its first INVITE'
    assert failed_time(calls_in['phone1'], 101, 107) == (4.0, False)
    assert failed_time(calls_in['phone1'], 107, 110) == (2.0, True), 'still failing at the end'
    assert attempts(messages, 'out') == {'phone1': [(108.5, True), (109.0, False)]}
    assert first_from(messages, SLAVE[0], 101) == 104.1
    assert last_from(messages, SLAVE[0], 110, 101) == 108.9
    assert failed_time(attempts(messages, 'out')['phone1'], 100, 120) == (11.0, True)


def test_calls_in_through_one_node_only(tmp_path):
    """The per-node view: a round answered by the slave works for a caller reaching either node,
    not for one who reaches the master only (a trunk on it)."""
    packets = [
        (100.0, CALLER, MASTER, invite('in-phone1-1-198.18.0.1')),
        (100.1, CALLER, SLAVE, invite('in-phone1-1-198.18.0.2')),
        (100.3, SLAVE, CALLER, answer('in-phone1-1-198.18.0.2')),    # still on the slave
        (100.4, MASTER, CALLER, answer('in-phone1-1-198.18.0.1', '404 Not Found')),
        (104.0, CALLER, MASTER, invite('in-phone1-2-198.18.0.1')),   # back on the master
        (104.2, MASTER, CALLER, answer('in-phone1-2-198.18.0.1')),
        (104.3, CALLER, SLAVE, invite('in-phone1-2-198.18.0.2')),
        (104.5, SLAVE, CALLER, answer('in-phone1-2-198.18.0.2', '404 Not Found')),
    ]
    messages = sip_messages(pcap(tmp_path / 'c.pcap', packets))
    either = attempts(messages, 'in')
    assert [ok for _, ok in either['phone1']] == [True, True]
    master = attempts(messages, 'in', via=MASTER[0])
    assert master == {'phone1': [(100.0, False), (104.0, True)]}
    assert failed_time(master['phone1'], 99, 110) == (4.0, False)
    assert [ok for _, ok in attempts(messages, 'in', via=SLAVE[0])['phone1']] == [True, False]
