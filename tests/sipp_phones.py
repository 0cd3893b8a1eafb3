"""Phones made of an independent SIP stack (SIPp, Debian's sip-tester), to cross-check
tests/phone.py: the same primary/backup behaviour written as a SIPp scenario, so that the
transactions, retransmissions and message handling are SIPp's, not ours.

Each phone is one SIPp "call" of a registration agent (scenario below) whose contact is a SIPp
UAS (its built-in `uas` scenario) answering every call into the phones: user `sippN`.
Calls out of these phones are not modelled (the cross-check is about calls into the phones).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import textwrap

from phone import Timers
from testbed import Node


def registration_scenario(primary: str, backup: str, timers: Timers, uas_port: int) -> str:
    """A SIPp scenario: register on the primary (failed when SIPp's own retransmissions, every
    T1 doubled, `-max_non_invite_retrans` of them, go unanswered: SIPp's transaction timer, not
    ours); renew `refresh_margin` s before the expiry the registrar granted (the `expires`
    of its 200's Contact, read and computed by SIPp, at most half of it); failed: register on
    the backup, then try the primary every fallback_timeout (answered: back on it) while
    renewing the backup's registration before the expiry it granted; both failed: again after
    reg_fail_retry_interval."""
    t1 = max(1, round(timers.t1 * 1000))
    margin = round(timers.refresh_margin * 1000)
    # the schedule comes from the registrar's answer, not from our reading of the settings:
    # renew = max(granted * 1000 - margin, granted * 1000 / 2) ms
    granted = textwrap.dedent(f'''\
        <action>
          <ereg regexp="expires=([0-9]+)" search_in="hdr" header="Contact:" assign_to="m,granted"/>
          <todouble assign_to="renew" variable="granted"/>
          <multiply assign_to="renew" value="1000"/>
          <assign assign_to="half" variable="renew"/>
          <divide assign_to="half" value="2"/>
          <subtract assign_to="renew" value="{margin}"/>
          <test assign_to="short" variable="renew" compare="less_than" variable2="half"/>
        </action>
        ''')

    def register(host: str, on_timeout: str, after: str = '') -> str:
        return textwrap.dedent(f'''\
            <nop><action><setdest host="{host}" port="5060" protocol="udp"/></action></nop>
            <send retrans="{t1}" ontimeout="{on_timeout}"><![CDATA[
            REGISTER sip:{host}:5060 SIP/2.0
            Via: SIP/2.0/UDP [local_ip]:[local_port];branch=[branch];rport
            From: <sip:sipp[call_number]@{host}>;tag=[call_number]reg
            To: <sip:sipp[call_number]@{host}>
            Call-ID: [call_id]
            CSeq: [cseq] REGISTER
            Contact: <sip:sipp[call_number]@[local_ip]:{uas_port}>
            Expires: {timers.expiry}
            Max-Forwards: 70
            User-Agent: sipp-phone
            Content-Length: 0

            ]]></send>
            <recv response="200">
            ''') + granted + '</recv>\n' + (
            '<nop condexec="short"><action><assign assign_to="renew" variable="half"/>'
            '</action></nop>\n') + (f'<nop{after}/>\n' if after else '')

    # on the backup the scenario ticks every `step` ms (2 T1): renews the backup once `renew`
    # ms have passed since its registration, tries the primary every fallback_timeout (both
    # timers run side by side, as in the model)
    step = max(1, round(timers.t1 * 2 * 1000))
    probe = round(timers.fallback_timeout * 1000)
    return (
        '<?xml version="1.0" encoding="ISO-8859-1" ?>\n'
        '<scenario name="phone with a primary and a backup registrar, one at a time">\n'
        '<label id="primary"/>\n'
        + register(primary, 'to_backup')
        + '<label id="on_primary"/>\n'
        '<pause variable="renew"/>\n'
        '<nop next="primary"/>\n'
        '<label id="to_backup"/>\n'
        '<nop><action><assign assign_to="b" value="0"/></action></nop>\n'
        '<label id="backup"/>\n'
        + register(backup, 'failed')
        + '<nop><action><assign assign_to="a" value="0"/></action></nop>\n'
        '<label id="on_backup"/>\n'
        f'<pause milliseconds="{step}"/>\n'
        f'<nop><action><add assign_to="a" value="{step}"/><add assign_to="b" value="{step}"/>'
        '<test assign_to="renew_now" variable="a" compare="greater_than_equal" variable2="renew"/>'
        f'<test assign_to="probe" variable="b" compare="greater_than_equal" value="{probe}"/>'
        '</action></nop>\n'
        '<nop next="try_primary" test="probe"/>\n'
        '<nop next="backup" test="renew_now"/>\n'
        '<nop next="on_backup"/>\n'
        '<label id="try_primary"/>\n'
        '<nop><action><assign assign_to="b" value="0"/></action></nop>\n'
        + register(primary, 'probe_failed', ' next="on_primary"')
        + '<label id="probe_failed"/>\n'
        '<nop next="backup" test="renew_now"/>\n'
        '<nop next="on_backup"/>\n'
        '<label id="failed"/>\n'
        f'<pause milliseconds="{round(timers.reg_fail_retry_interval * 1000)}"/>\n'
        '<nop next="primary"/>\n'
        '</scenario>\n')


class SippPhones:
    """`count` SIPp phones in `node`, registering on `servers` (primary, backup), their
    registrations spread evenly over `spread` seconds; each renews from the expiry its
    registrar granted (the scenario's own arithmetic)."""

    REG_PORT, UAS_PORT = 5300, 5301

    def __init__(self, node: Node, servers: list[Node], count: int, timers: Timers,
                 spread: float):
        self.node, self.count = node, count
        self.dir = os.path.join(node.root, f'sipp-{os.getpid()}-{id(self)}')
        os.makedirs(self.dir)
        self.scenario = os.path.join(self.dir, 'register.xml')
        with open(self.scenario, 'w') as f:
            f.write(registration_scenario(servers[0].ip, servers[1].ip, timers,
                                          self.UAS_PORT))
        self.primary = servers[0].ip
        self.retransmissions = timers.retry_counts
        self.spread = spread
        self.procs: list[subprocess.Popen] = []
        self.names = [f'sipp{i + 1}' for i in range(count)]

    def _sipp(self, name: str, *argv) -> subprocess.Popen:
        log = open(os.path.join(self.dir, f'{name}.out'), 'w')
        try:
            return self.node.popen('sipp', *argv, '-nostdin', '-trace_err', '-error_file',
                                   os.path.join(self.dir, f'{name}.errors'),
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True, cwd=self.dir)
        finally:
            log.close()

    def __enter__(self) -> SippPhones:
        self.procs.append(self._sipp('uas', '-sn', 'uas', '-i', self.node.ip, '-p',
                                     self.UAS_PORT, '-default_behaviors', 'none'))
        period = max(1, round(self.spread * 1000 / self.count))
        self.procs.append(self._sipp('register', '-sf', self.scenario, '-i', self.node.ip, '-p',
                                     self.REG_PORT, '-m', self.count, '-l', self.count,
                                     '-r', 1, '-rp', period, '-default_behaviors', 'none',
                                     '-max_non_invite_retrans', self.retransmissions,
                                     '-max_retrans', self.retransmissions,
                                     f'{self.primary}:5060'))
        return self

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def __exit__(self, *exc) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
