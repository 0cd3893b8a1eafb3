"""Is the master up or down? A pure function of the probe history and the clock.

The memory of past probes is kept between cron runs (state_dir), so a detection started
in one run finishes in the next. Times are CLOCK_MONOTONIC seconds, which every process
of one boot shares and which no wall-clock change moves; a new boot, a clock going
backwards or a long gap without probes restarts the evidence (never the decision).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

UP, DOWN, UNKNOWN = 'up', 'down', 'unknown'


@dataclass(frozen=True)
class Policy:
    probe_interval: float
    down_after: float
    up_after: float

    @property
    def failures_needed(self) -> int:
        """Consecutive failed probes needed besides the silence (at least 2)."""
        return max(2, math.ceil(self.down_after / self.probe_interval))

    @property
    def max_gap(self) -> float:
        """Longer than this between two probes, and the evidence is too old to build on."""
        return 60 + 2 * self.probe_interval


@dataclass(frozen=True)
class Probe:
    at: float            # monotonic time of the probe
    master: bool         # the master answered every configured probe
    witness: bool | None  # None: no witness configured
    detail: str = ''     # what failed, for the log


@dataclass(frozen=True)
class Memory:
    master: str = ''     # the master this memory is about: another one starts afresh
    decision: str = UNKNOWN
    decided_at: float | None = None
    boot: str = ''
    last_probe: float | None = None
    last_answer: float | None = None
    answering_since: float | None = None
    failing_since: float | None = None
    failures: int = 0


@dataclass(frozen=True)
class Verdict:
    decision: str
    changed: bool
    sentence: str


def observe(memory: Memory, probe: Probe, policy: Policy, boot: str) -> tuple[Memory, Verdict]:
    """Fold one probe into the memory; say whether the master is up or down now."""
    m = memory
    if (m.boot != boot or m.last_probe is None or probe.at < m.last_probe
            or probe.at - m.last_probe > policy.max_gap):
        m = Memory(master=m.master, decision=m.decision,
                   decided_at=m.decided_at if m.boot == boot else None, boot=boot)
    m = replace(m, last_probe=probe.at)
    if probe.master:
        return _answered(m, probe, policy)
    return _silent(m, probe, policy)


def _answered(m: Memory, probe: Probe, policy: Policy) -> tuple[Memory, Verdict]:
    since = m.answering_since if m.answering_since is not None else probe.at
    m = replace(m, last_answer=probe.at, answering_since=since, failing_since=None, failures=0)
    answering = probe.at - since
    if m.decision == DOWN:
        if answering >= policy.up_after:
            m = replace(m, decision=UP, decided_at=probe.at)
            return m, Verdict(UP, True, f'the master has answered for {answering:.0f} s '
                                        f'(>= {policy.up_after:g} s): giving telephony back to it')
        return m, Verdict(DOWN, False, f'the master answers again since {answering:.0f} s; '
                                       f'this slave keeps telephony until it has answered for '
                                       f'{policy.up_after:g} s')
    if m.decision == UNKNOWN:
        m = replace(m, decision=UP, decided_at=probe.at)
        return m, Verdict(UP, True, 'the master answers: this slave stays on standby')
    return m, Verdict(UP, False, 'the master answers: this slave stays on standby')


def _silent(m: Memory, probe: Probe, policy: Policy) -> tuple[Memory, Verdict]:
    failing_since = m.failing_since if m.failing_since is not None else probe.at
    m = replace(m, answering_since=None, failing_since=failing_since, failures=m.failures + 1)
    silent_since = m.last_answer if m.last_answer is not None else failing_since
    silent = probe.at - silent_since
    why = f' ({probe.detail})' if probe.detail else ''
    doubt = m.decision == DOWN and m.decided_at is None
    if m.decision == DOWN and not doubt:
        return m, Verdict(DOWN, False, f'the master is still silent{why}: this slave keeps '
                                       'telephony')
    if doubt and (silent < policy.down_after or m.failures < policy.failures_needed
                  or probe.witness is False):
        return m, Verdict(DOWN, False, f'the master is silent{why}; the memory was in doubt: '
                                       'this slave keeps telephony, the probes have not '
                                       'declared the master down yet')
    if silent < policy.down_after or m.failures < policy.failures_needed:
        return m, Verdict(m.decision, False,
                          f'the master has been silent for {silent:.0f} s{why} '
                          f'({m.failures} failed probes); it is declared down after '
                          f'{policy.down_after:g} s and {policy.failures_needed} failed probes')
    if probe.witness is False:
        return m, Verdict(m.decision, False,
                          f'the master has been silent for {silent:.0f} s but the witness does '
                          'not answer either: this slave is probably the one cut off, so it '
                          'does NOT take over')
    m = replace(m, decision=DOWN, decided_at=probe.at)
    return m, Verdict(DOWN, True, f'the master has been silent for {silent:.0f} s{why} '
                                  f'({m.failures} failed probes): taking over telephony')


def watching(memory: Memory, master: str) -> Memory:
    """The memory to build on when watching `master`: a memory about another master (or
    written before the master was recorded) says nothing about this one."""
    return memory if memory.master == master else Memory(master=master)


def in_doubt(master: str, telephony_runs: bool) -> Memory:
    """The memory to start from when there is none to trust (missing or invalid): while this
    slave's telephony runs it may be serving, so the master must answer for up_after before
    telephony stops (a lost memory never stops telephony early); otherwise a fresh start.
    A DOWN in doubt has no decided_at (see in_doubt_down): it keeps telephony up but is no
    failover until the probes declare the master down."""
    return Memory(master=master, decision=DOWN if telephony_runs else UNKNOWN)


def in_doubt_down(memory: Memory) -> bool:
    """A DOWN that no probe decided (a memory in doubt, or a decision of an earlier boot)."""
    return memory.decision == DOWN and memory.decided_at is None


_TIMES = ('decided_at', 'last_probe', 'last_answer', 'answering_since', 'failing_since')


def memory_from_dict(data: dict) -> Memory:
    """A Memory from its JSON form (other keys ignored); {} gives a fresh memory.

    Every field is checked: ValueError says which one is wrong (the caller starts afresh)."""
    if not isinstance(data, dict):
        raise ValueError(f'not a JSON object but {type(data).__name__}')
    for name in ('master', 'boot'):
        if not isinstance(data.get(name, ''), str):
            raise ValueError(f'{name}: not a string: {data[name]!r}')
    if data.get('decision', UNKNOWN) not in (UP, DOWN, UNKNOWN):
        raise ValueError(f'decision: not up, down or unknown: {data["decision"]!r}')
    for name in _TIMES:
        value = data.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0):
            raise ValueError(f'{name}: not a time in seconds: {value!r}')
    failures = data.get('failures', 0)
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise ValueError(f'failures: not a count: {failures!r}')
    known = {f.name for f in fields(Memory)}
    return Memory(**{k: v for k, v in data.items() if k in known})
