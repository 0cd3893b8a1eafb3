"""The failback drain: reading Asterisk's call count and waiting (clock injected)."""

from wazo_ha_common.failover.services import Drain, calls_in, drain

# the three lines of `asterisk -rx 'core show channels count'` (Asterisk's main/cli.c)
PLAIN = '4 active channels\n2 active calls\n31 calls processed\n'
MAXCALLS = '2 active channels\n1 of 100 max active call ( 1.00% of capacity)\n9 calls processed\n'


def test_the_call_count_is_read_from_asterisk_s_answer():
    assert calls_in(PLAIN) == 2
    assert calls_in(MAXCALLS) == 1
    assert calls_in('0 active channels\n0 active calls\n0 calls processed\n') == 0
    assert calls_in('Unable to connect to remote asterisk') is None


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_waits_while_calls_are_up_and_stops_when_they_end():
    clock = Clock()
    answers = iter([3, 3, 1, 0])
    result = drain(30, count=lambda: next(answers), sleep=clock.sleep, clock=clock)
    assert result == Drain(calls=3, waited=6.0, left=0)
    assert 'waited 6 s for 3 calls to end: none cut' in result.sentence(30)


def test_gives_up_at_the_limit_and_says_how_many_are_cut():
    clock = Clock()
    result = drain(5, count=lambda: 2, sleep=clock.sleep, clock=clock)
    assert result.waited == 5.0 and result.left == 2
    assert '2 still up, cut by the stop' in result.sentence(5)


def test_no_call_no_wait():
    clock = Clock()
    result = drain(30, count=lambda: 0, sleep=clock.sleep, clock=clock)
    assert result.waited == 0 and 'no call up' in result.sentence(30)


def test_asterisk_that_does_not_answer_is_not_waited_for():
    clock = Clock()
    result = drain(30, count=lambda: None, sleep=clock.sleep, clock=clock)
    assert result.waited == 0 and 'cannot count' in result.sentence(30)
