"""The failback's wait for the phones: reading Asterisk's contacts, when to stop waiting."""

from wazo_ha_common.failover.phones import wait_gone
from wazo_ha_common.decisions.registrations import PhonesWait, contacts_in, keep_waiting, wait_limit

# `asterisk -rx 'pjsip show contacts'` as Asterisk lays it out (res_pjsip/pjsip_cli.c
# ast_sip_cli_traverse_objects, res_pjsip/location.c cli_contact_print_header/_body)
TWO = '''
  Contact:  <Aor/ContactUri..............................> <Hash....> <Status> <RTT(ms)..>
==========================================================================================

  Contact:  1001/sip:1001@10.0.0.21:5060;transport=udp     5f1e3b2a9c Avail         3.071
  Contact:  ab12cd/sip:ab12cd@10.0.0.22:5062               0c9d77e1f4 NonQual         nan

'''


def test_the_contacts_are_counted_from_asterisk_s_answer():
    assert contacts_in(TWO) == 2
    assert contacts_in('No objects found.\n\n') == 0
    assert contacts_in('Unable to connect to remote asterisk (does /var/run/asterisk/'
                       'asterisk.ctl exist?)\n') is None
    assert contacts_in('') is None


def test_the_wait_is_bounded_by_the_longest_expiry():
    assert wait_limit(300, 60) == 360
    assert keep_waiting(3, 10, 360)
    assert not keep_waiting(0, 10, 360)
    assert not keep_waiting(3, 360, 360)
    assert not keep_waiting(None, 0, 360), 'cannot count: nothing to wait for'


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_waits_while_phones_are_registered_and_stops_when_they_are_gone():
    clock = Clock()
    answers = iter([4, 4, None, 1, 0])
    result = wait_gone(300, count=lambda: next(answers), sleep=clock.sleep, clock=clock)
    assert result == PhonesWait(phones=4, waited=8.0, left=0)
    assert 'waited 8 s for 4 phones to register on the master again: none left here' in \
        result.sentence(300)


def test_gives_up_at_the_bound_and_says_how_many_are_left():
    clock = Clock()
    result = wait_gone(5, count=lambda: 2, sleep=clock.sleep, clock=clock)
    assert result.waited == 5.0 and result.left == 2
    assert '2 still registered here' in result.sentence(5)
    assert 'cannot count' in PhonesWait(None, 0, None).sentence(5)
    assert 'nothing to wait for' in PhonesWait(0, 0, 0).sentence(5)


def test_a_master_that_stops_answering_ends_the_wait_without_a_stop():
    clock = Clock()
    answers = iter([True, False])
    result = wait_gone(300, count=lambda: 5, sleep=clock.sleep, clock=clock,
                       master_answers=lambda: next(answers))
    assert result == PhonesWait(phones=5, waited=4.0, left=5, master_lost=True)
    assert 'the master stopped answering after 4 s of waiting for 5 phones: telephony NOT ' \
        'stopped' in result.sentence(300)
