"""The failover decision: a pure function of probes and the clock."""

import pytest

from wazo_ha_common.decisions.health import (DOWN, UNKNOWN, UP, Memory, Policy, Probe, in_doubt,
                                             in_doubt_down, memory_from_dict, observe, watching)

POLICY = Policy(probe_interval=5, down_after=15, up_after=60)
BOOT = 'boot-1'


def feed(memory, answers, start=0.0, step=5.0, witness=None, boot=BOOT):
    """Probe every `step` seconds with these answers (True: master answered)."""
    verdicts = []
    for i, answered in enumerate(answers):
        memory, verdict = observe(memory, Probe(start + i * step, answered, witness), POLICY, boot)
        verdicts.append(verdict)
    return memory, verdicts


def test_first_answer_decides_up_without_waiting():
    memory, (verdict,) = feed(Memory(), [True])
    assert verdict.decision == UP and verdict.changed
    assert 'standby' in verdict.sentence


def test_master_down_after_15_seconds_and_3_failed_probes():
    memory, verdicts = feed(Memory(), [True, False, False, False])
    assert [v.decision for v in verdicts] == [UP, UP, UP, DOWN]
    assert verdicts[-1].changed and 'taking over' in verdicts[-1].sentence
    assert [v.changed for v in verdicts] == [True, False, False, True]


def test_no_decision_change_while_down():
    memory, verdicts = feed(Memory(), [True, False, False, False, False, False])
    assert [v.changed for v in verdicts[4:]] == [False, False]
    assert verdicts[-1].decision == DOWN


def test_two_lost_probes_are_not_a_failure():
    _, verdicts = feed(Memory(), [True, False, False, True, False, False, True] * 10)
    assert all(v.decision == UP for v in verdicts)


def test_a_10_second_outage_does_not_fail_over():
    _, verdicts = feed(Memory(), [True] * 3 + [False, False] + [True] * 3)
    assert all(v.decision == UP for v in verdicts)


def test_failback_only_after_answering_for_up_after():
    memory, _ = feed(Memory(), [True, False, False, False])
    memory, verdicts = feed(memory, [True] * 14, start=20)
    assert [v.decision for v in verdicts[:12]] == [DOWN] * 12  # 0..55 s of answers
    assert verdicts[12].decision == UP and verdicts[12].changed  # 60 s
    assert 'giving telephony back' in verdicts[12].sentence


def test_a_flapping_master_restarts_the_failback_count():
    memory, _ = feed(Memory(), [True, False, False, False])
    memory, verdicts = feed(memory, [True] * 10 + [False] + [True] * 12, start=20)
    assert all(v.decision == DOWN for v in verdicts), 'never 60 s of answers in a row'
    memory, verdicts = feed(memory, [True], start=20 + 23 * 5)
    assert verdicts[0].decision == UP


def test_silence_counts_from_the_last_answer():
    # probes at 0 (answer), then master silent: with 5 s probes the 3rd failure is at 15 s
    memory, verdicts = feed(Memory(), [True, False, False, False], step=5)
    assert verdicts[-1].decision == DOWN
    # slower probes: 3 failures take 30 s, silence counts from the answer at 0
    memory, verdicts = feed(Memory(), [True, False, False, False], step=10)
    assert verdicts[2].decision == UP and verdicts[3].decision == DOWN


def test_enough_silence_but_too_few_probes_is_not_down():
    memory, verdicts = feed(Memory(), [True, False, False], step=20)
    assert verdicts[-1].decision == UP, 'two failures are not enough whatever the time'


def test_unknown_master_never_answering_is_declared_down_after_down_after():
    _, verdicts = feed(Memory(), [False, False, False, False])
    assert [v.decision for v in verdicts] == [UNKNOWN, UNKNOWN, UNKNOWN, DOWN]


def test_witness_silent_too_means_this_slave_is_cut_off():
    memory, _ = feed(Memory(), [True])
    memory, verdicts = feed(memory, [False] * 10, start=5, witness=False)
    assert all(v.decision == UP for v in verdicts)
    assert 'does NOT take over' in verdicts[-1].sentence
    memory, verdicts = feed(memory, [False], start=55, witness=True)
    assert verdicts[0].decision == DOWN, 'the witness answers again: the master is the one down'


def test_state_survives_between_runs_like_cron_does():
    # run 1 probes 0..50 s; the master dies at 52 s; run 2 starts at 60 s
    memory, _ = feed(Memory(), [True] * 11)
    memory = memory_from_dict(memory.__dict__)  # through JSON in real life
    memory, verdicts = feed(memory, [False, False, False], start=60)
    assert verdicts[-1].decision == DOWN  # at 70 s: 20 s after the last answer


def test_a_crash_leaving_a_long_gap_restarts_the_evidence_not_the_decision():
    memory, _ = feed(Memory(), [True, False, False, False])      # down at 15 s
    memory, verdicts = feed(memory, [True], start=1000)           # long gap (crash)
    assert verdicts[0].decision == DOWN and not verdicts[0].changed
    memory, verdicts = feed(memory, [True] * 13, start=1005)
    assert verdicts[-1].decision == UP


def test_old_answers_do_not_shorten_detection_after_a_gap():
    memory, _ = feed(Memory(), [True])
    memory, verdicts = feed(memory, [False, False], start=500)
    assert all(v.decision == UP for v in verdicts), 'the answer 500 s ago is not evidence'
    memory, verdicts = feed(memory, [False, False], start=510)
    assert verdicts[-1].decision == DOWN


@pytest.mark.parametrize('jump', [-3600.0, -1.0])
def test_clock_going_backwards_restarts_the_evidence(jump):
    memory, _ = feed(Memory(), [True, False, False])
    memory, verdicts = feed(memory, [False], start=10 + jump)
    assert verdicts[0].decision == UP, 'no failover on a clock jump'
    assert memory.failures == 1


def test_new_boot_restarts_the_evidence():
    memory, _ = feed(Memory(), [True, False, False])
    memory, verdicts = feed(memory, [False], start=15, boot='boot-2')
    assert verdicts[0].decision == UP


@pytest.mark.parametrize('stored, field', [
    ({'decision': 'sideways'}, 'decision'),
    ({'last_probe': '5'}, 'last_probe'),
    ({'last_answer': True}, 'last_answer'),
    ({'decided_at': float('nan')}, 'decided_at'),
    ({'answering_since': -3.0}, 'answering_since'),
    ({'failing_since': [1]}, 'failing_since'),
    ({'failures': '3'}, 'failures'),
    ({'failures': 2.5}, 'failures'),
    ({'failures': -1}, 'failures'),
    ({'boot': 7}, 'boot'),
    ({'master': None}, 'master'),
])
def test_a_field_of_the_wrong_type_is_refused_by_name(stored, field):
    with pytest.raises(ValueError, match=field):
        memory_from_dict(stored)


def test_a_memory_that_is_not_an_object_is_refused():
    with pytest.raises(ValueError):
        memory_from_dict([1, 2])


def test_no_memory_is_a_fresh_one():
    assert memory_from_dict({}) == Memory()


def test_a_memory_about_another_master_starts_afresh():
    memory, _ = feed(Memory(master='198.18.0.1'), [True, False, False, False])
    assert memory.decision == DOWN and memory.master == '198.18.0.1'
    assert watching(memory, '198.18.0.1') is memory
    assert watching(memory, '198.18.0.9') == Memory(master='198.18.0.9')
    assert watching(Memory(decision=DOWN), '198.18.0.1').decision == UNKNOWN, \
        'a memory that does not say which master it is about is not trusted'


def test_the_master_is_kept_when_the_evidence_restarts():
    memory, _ = feed(Memory(master='198.18.0.1'), [True])
    memory, _ = feed(memory, [True], start=5000)  # long gap
    assert memory.master == '198.18.0.1'


def test_memory_round_trips_through_the_state_file_with_its_extra_keys():
    memory, _ = feed(Memory(), [True, False, False, False])
    stored = {**memory.__dict__, 'sentence': 'taking over', 'written_at': 1.5}
    assert memory_from_dict(stored) == memory
    assert memory_from_dict(stored).decision == DOWN


def test_failures_needed_follows_the_settings():
    assert Policy(5, 15, 60).failures_needed == 3
    assert Policy(1, 3, 4).failures_needed == 3
    assert Policy(10, 5, 60).failures_needed == 2


def test_a_memory_in_doubt_while_telephony_runs_keeps_it_until_up_after_of_answers():
    policy = Policy(probe_interval=10, down_after=30, up_after=60)
    memory = in_doubt('198.18.0.1', telephony_runs=True)
    assert memory.decision == DOWN
    verdicts = []
    for t in range(100, 171, 10):
        memory, verdict = observe(memory, Probe(t, True, None), policy, 'boot')
        verdicts.append(verdict)
    assert [v.decision for v in verdicts] == [DOWN] * 6 + [UP, UP]
    assert verdicts[6].changed and 'giving telephony back' in verdicts[6].sentence


def test_a_memory_in_doubt_while_telephony_is_stopped_starts_afresh():
    memory = in_doubt('198.18.0.1', telephony_runs=False)
    assert memory == Memory(master='198.18.0.1')
    _, verdict = observe(memory, Probe(100, True, None), Policy(10, 30, 60), 'boot')
    assert verdict.decision == UP


def test_a_down_in_doubt_is_no_failover_until_the_probes_declare_the_master_down():
    """The memory's doubt keeps telephony up; only probes open a failover (and its episode)."""
    policy = Policy(probe_interval=10, down_after=30, up_after=60)
    memory = in_doubt('198.18.0.1', telephony_runs=True)
    verdicts = []
    for t in range(100, 141, 10):
        memory, verdict = observe(memory, Probe(t, False, None), policy, 'boot')
        verdicts.append((verdict.decision, verdict.changed, in_doubt_down(memory)))
    assert verdicts == [(DOWN, False, True)] * 3 + [(DOWN, True, False), (DOWN, False, False)]
