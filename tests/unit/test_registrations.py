"""The failback's wait for the phones: reading Asterisk's registered contacts, when to stop
waiting."""

from wazo_ha_common.decisions.registrations import (PhonesWait, Waiting, contacts_in, step,
                                                    wait_limit, waiting_from)

# One node seen two ways: 2 phones registered, and a trunk whose AOR has a fixed `contact=`.
# `asterisk -rx 'pjsip show contacts'` (res_pjsip/pjsip_cli.c ast_sip_cli_traverse_objects,
# res_pjsip/location.c cli_contact_print_header/_body) lists the trunk's permanent contact too,
# and it never expires:
SHOW_CONTACTS = '''
  Contact:  <Aor/ContactUri..............................> <Hash....> <Status> <RTT(ms)..>
==========================================================================================

  Contact:  1001/sip:1001@10.0.0.21:5060;transport=udp     5f1e3b2a9c Avail         3.071
  Contact:  ab12cd/sip:ab12cd@10.0.0.22:5062               0c9d77e1f4 NonQual         nan
  Contact:  trunk-op/sip:op.example.net:5060               77aa01be3d Avail        12.544

'''
# `asterisk -rx 'database show registrar/contact'` (main/db.c database show: `%-50s: %-25s`
# lines, then `N results found.`): only the contacts phones registered, which res_pjsip keeps
# in astdb (res_pjsip/location.c: contact -> astdb "registrar"), keyed AOR;@HASH
DATABASE = '''\
/registrar/contact/1001;@5f1e3b2a9c0d41e2a8f1b7c6d5e4f3a2: {"uri":"sip:1001@10.0.0.21:5060;transport=udp","expiration_time":"1765040000","endpoint":"1001"}
/registrar/contact/ab12cd;@0c9d77e1f4aa9b8c7d6e5f4a3b2c1d0e: {"uri":"sip:ab12cd@10.0.0.22:5062","expiration_time":"1765040100","endpoint":"ab12cd"}
2 results found.
'''


def test_only_the_phones_registered_contacts_are_counted_not_the_trunks():
    assert contacts_in(DATABASE) == 2
    assert contacts_in('0 results found.\n') == 0
    # the list that also holds the trunk's fixed contact is not the one asked
    assert contacts_in(SHOW_CONTACTS) is None
    assert contacts_in('Unable to connect to remote asterisk (does /var/run/asterisk/'
                       'asterisk.ctl exist?)\n') is None
    assert contacts_in('') is None


def test_the_wait_is_bounded_by_the_phones_fallback_timeout():
    assert wait_limit(120, 30) == 150


def test_a_wait_begins_with_phones_here_and_ends_when_none_is_left():
    waiting, ended = step(None, 4, 1000.0, 150)
    assert waiting == Waiting(1000.0, 4) and ended is None
    assert step(waiting, 3, 1100.0, 150) == (waiting, None)
    assert step(waiting, 0, 1120.0, 150) == (None, PhonesWait(4, 120.0, 0))
    assert 'waited 120 s for 4 phones to register on the master again: none left here' in \
        PhonesWait(4, 120.0, 0).sentence(150)


def test_nothing_to_wait_for():
    assert step(None, 0, 5.0, 150) == (None, PhonesWait(0, 0.0, 0))
    assert 'nothing to wait for' in PhonesWait(0, 0, 0).sentence(150)
    assert step(None, None, 5.0, 150) == (None, PhonesWait(None, 0.0, None))
    assert 'cannot count' in PhonesWait(None, 0, None).sentence(150)


def test_gives_up_at_the_bound_counted_from_when_the_wait_began():
    waiting = Waiting(1000.0, 2)
    assert step(waiting, 2, 1149.0, 150) == (waiting, None)
    waiting2, ended = step(waiting, 2, 1150.0, 150)
    assert waiting2 is None and ended == PhonesWait(2, 150.0, 2)
    assert '2 still registered here' in ended.sentence(150)


def test_asterisk_dying_during_the_wait_ends_it():
    waiting, ended = step(Waiting(1000.0, 5), None, 1010.0, 150)
    assert waiting is None and ended == PhonesWait(5, 10.0, None)
    assert 'Asterisk stopped answering after 10 s of waiting for 5 phones: wait ended' in \
        ended.sentence(150)


def test_the_wait_is_read_back_from_the_state_or_dropped():
    assert waiting_from(Waiting(12.5, 3).as_dict()) == Waiting(12.5, 3)
    for bad in (None, [], {}, {'began': 'x', 'phones': 3}, {'began': 1.0, 'phones': -1},
                {'began': True, 'phones': 3}, {'began': 1.0, 'phones': 2.5},
                {'began': float('nan'), 'phones': 1}):
        assert waiting_from(bad) is None, bad
