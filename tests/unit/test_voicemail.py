"""Where the slave's voicemail messages go on the master (wazo_ha_common.decisions.voicemail)."""

import os

import pytest

from wazo_ha_common.decisions.voicemail import (Folder, Message, greeting_step, identity, limits,
                                                message_fields, message_file, plan,
                                                relative_kind)

TXT = """;
; Message Information file
;
[message]
origmailbox=1001
context=default
callerid="Alice" <1002>
origdate=Sun Dec  6 17:00:00 2026
origtime={t}
msg_id={id}
flag=
duration=7
"""


def mid(msg_id):
    """The identity of a message of TXT with this msg_id."""
    return identity(TXT.format(t=0, id=msg_id))


def msg(folder, number, msg_id, t=0, exts=('wav', 'txt')):
    return Message(f'default/1001/{folder}', number, exts, identity(TXT.format(t=t, id=msg_id)), t)


def test_a_message_file_is_msg_four_digits_and_an_extension():
    assert message_file('msg0003.wav') == (3, 'wav')
    assert message_file('msg0003.WAV') == (3, 'WAV')
    assert message_file('msg0003.txt') == (3, 'txt')
    assert message_file('unavail.wav') is None
    assert message_file('msg0003.txt.before-failback-20261206') is None
    assert message_file('msg12345.txt') is None


def test_the_message_section_gives_msg_id_and_origtime():
    fields = message_fields(TXT.format(t=1700000000, id='1700000000-00000001'))
    assert fields['msg_id'] == '1700000000-00000001' and fields['origtime'] == '1700000000'
    assert identity(TXT.format(t=1, id='abc')) == mid('abc')
    assert mid('abc').startswith('msg_id:abc~')
    without = TXT.format(t=1, id='')
    assert identity(without).startswith('sha256:') and identity(without) != identity(without + ' ')


def test_the_slaves_messages_take_the_next_numbers_of_the_same_folder_in_time_order():
    slave = [msg('INBOX', 0, 'b', t=20), msg('INBOX', 1, 'a', t=10), msg('Old', 0, 'c', t=5)]
    master = {'default/1001/INBOX': Folder(frozenset({0, 1}))}
    decided = plan(slave, master, {'default/1001': {'m0', 'm1'}}, {})
    assert [(p.message.folder, p.message.identity, p.number) for p in decided.place] == [
        ('default/1001/INBOX', mid('a'), 2), ('default/1001/INBOX', mid('b'), 3),
        ('default/1001/Old', mid('c'), 0)]
    assert decided.here == decided.before == decided.full == []


def test_next_free_is_one_past_the_highest_as_asterisk_numbers():
    assert Folder(frozenset({0, 2})).next_free() == 3, 'a gap is not reused (Asterisk resequences)'
    assert Folder().next_free() == 0
    assert Folder(frozenset({9998})).next_free() is None


def test_a_message_already_on_the_master_in_any_folder_is_not_placed_again():
    decided = plan([msg('INBOX', 0, 'a')], {}, {'default/1001': {mid('a')}}, {})
    assert decided.place == [] and len(decided.here) == 1


def test_a_message_brought_back_before_and_deleted_since_does_not_return():
    decided = plan([msg('INBOX', 0, 'a')], {}, {}, {'default/1001': {mid('a')}})
    assert decided.place == [] and len(decided.before) == 1
    assert decided.known() == {'default/1001': {mid('a')}}


def test_the_record_is_per_mailbox():
    decided = plan([msg('INBOX', 0, 'a')], {}, {}, {'default/1002': {mid('a')}})
    assert len(decided.place) == 1


def test_a_full_folder_leaves_the_message_on_the_slave():
    full = {'default/1001/INBOX': Folder(frozenset({9998}))}
    decided = plan([msg('INBOX', 0, 'a')], full, {}, {})
    assert decided.place == [] and len(decided.full) == 1
    assert 'folder full' in decided.sentence()


def test_greetings_newer_wins_the_other_kept():
    assert greeting_step(100.0, None) == 'copy'
    assert greeting_step(200.0, 100.0) == 'replace'
    assert greeting_step(100.0, 100.9) == 'keep'
    assert greeting_step(100.0, 200.0) == 'keep'


def test_what_each_file_of_the_spool_is():
    assert relative_kind(('default', '1001', 'INBOX', 'msg0000.wav')) == 'message'
    assert relative_kind(('default', '1001', 'unavail.wav')) == 'other'
    assert relative_kind(('default', '1001', 'tmp', 'msg0000.wav')) == 'skip'
    assert relative_kind(('default', '1001', 'INBOX', '.lock')) == 'skip'
    assert relative_kind(('default', '1001', 'INBOX', 'notes')) == 'refuse'


def test_only_messages_of_the_episode_are_placed_from_300_s_before_its_start():
    slave = [msg('INBOX', 0, 'old', t=1000 - 301), msg('INBOX', 1, 'edge', t=1000 - 300),
             msg('INBOX', 2, 'new', t=2000)]
    decided = plan(slave, {}, {}, {}, since=1000)
    assert [p.message.identity for p in decided.place] == [mid('edge'), mid('new')]
    assert [m.identity for m in decided.older] == [mid('old')]
    assert 'older than the episode' in decided.sentence()


def test_a_greeting_not_written_during_the_episode_stays_on_the_slave():
    assert greeting_step(99.0, None, since=100.0) == 'keep'
    assert greeting_step(100.0, None, since=100.0) == 'copy'
    assert greeting_step(150.0, 120.0, since=100.0) == 'replace'


def test_in_a_folder_only_message_files_of_four_digits_and_a_known_format():
    for name in ('msg00001.txt', 'msgABCD.txt', 'msg0001.exe', 'msg0001.txt.bak'):
        assert relative_kind(('default', '1001', 'INBOX', name)) == 'refuse', name
    assert relative_kind(('default', '1001', 'INBOX', 'sub', 'msg0000.txt')) == 'refuse'
    assert relative_kind(('default', '1001', 'INBOX', 'msg0001.gsm')) == 'message'


VOICEMAIL_CONF = """[general]
format=wav49|gsm|wav
maxmsg=3 ; per folder

[zonemessages]
eastern=America/New_York|'vm-received' Q 'digits/at' IMp

[default]
1001 => 1234,Alice,alice@example.com,,attach=yes|maxmsg=2|tz=eastern
1002 => 5678,Bob
1003 => 0000,Carol,,,maxmsg=oops
"""


def test_maxmsg_in_general_and_per_mailbox_default_100():
    caps = limits(VOICEMAIL_CONF)
    assert (caps.of('default/1001'), caps.of('default/1002'), caps.of('default/1003')) == (2, 3, 3)
    assert limits('').of('default/1001') == 100


def test_messages_beyond_maxmsg_stay_on_the_slave():
    slave = [msg('INBOX', 0, 'a', t=1), msg('INBOX', 1, 'b', t=2), msg('Old', 0, 'c', t=3)]
    master = {'default/1001/INBOX': Folder(frozenset({0}))}
    decided = plan(slave, master, {}, {}, caps=limits(VOICEMAIL_CONF))
    assert [(p.message.identity, p.number) for p in decided.place] == [
        (mid('a'), 1), (mid('c'), 0)]
    assert [m.identity for m in decided.full] == [mid('b')]


def test_two_messages_with_the_same_msg_id_from_two_nodes_are_both_kept():
    """Asterisk's msg_id is unique per system only (a second and a counter restarting at 0):
    the slave's message with the master's msg_id but another caller is not 'already there'."""
    other = TXT.format(t=0, id='1700000000-0').replace('"Alice" <1002>', '"Bob" <1003>')
    theirs = identity(TXT.format(t=0, id='1700000000-0'))
    ours = Message('default/1001/INBOX', 0, ('wav', 'txt'), identity(other), 0)
    assert identity(other) != theirs
    decided = plan([ours], {'default/1001/INBOX': Folder(frozenset({0}))},
                   {'default/1001': {theirs}}, {})
    assert [(p.message.identity, p.number) for p in decided.place] == [(identity(other), 1)]


def test_a_message_brought_back_by_an_earlier_version_is_not_brought_back_again():
    decided = plan([msg('INBOX', 0, 'a')], {}, {}, {'default/1001': {'msg_id:a'}})
    assert decided.place == [] and len(decided.before) == 1


def test_the_staged_size_is_the_regular_files_of_rsyncs_listing(tmp_path):
    """Read from real `rsync --list-only` output, with and without digit grouping."""
    import subprocess
    from wazo_ha_common.decisions.voicemail import listed_bytes, over_stage_cap
    (tmp_path / 'default' / '1001' / 'INBOX').mkdir(parents=True)
    (tmp_path / 'default' / '1001' / 'INBOX' / 'msg0000.wav').write_bytes(b'x' * 123456)
    (tmp_path / 'default' / '1001' / 'INBOX' / 'msg0000.txt').write_text('[message]\n')
    os.symlink('/etc/passwd', tmp_path / 'link')
    for options in (['--no-h'], []):  # ours; rsync's default groups digits (123,456)
        listing = subprocess.run(['rsync', '-r', '-l', '--list-only', *options, f'{tmp_path}/'],
                                 capture_output=True, text=True, check=True).stdout
        assert listed_bytes(listing) == 123456 + len('[message]\n'), listing
    units = subprocess.run(['rsync', '-r', '--list-only', '-hh', f'{tmp_path}/'],
                           capture_output=True, text=True, check=True).stdout
    with pytest.raises(ValueError, match='not a size in bytes'):
        listed_bytes(units)
    assert over_stage_cap(3 * 1048576, 2) and over_stage_cap(2 * 1048576, 2) is None
    assert over_stage_cap(10 ** 12, 0) is None
