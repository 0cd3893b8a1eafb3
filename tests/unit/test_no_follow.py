"""Files root reads or removes in a directory another user owns (adapters.system): no link
followed, no hard link read."""

import os

import pytest

from wazo_ha_common.adapters.system import read_no_follow, unlink_no_follow
from wazo_ha_common.errors import WazoHaError

OTHER = 4321  # a user that is not root (the uid alone is enough for ownership)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason='chown to another user needs root')


def test_a_hard_link_in_a_directory_another_user_owns_is_not_read(tmp_path):
    secret = tmp_path / 'secret'
    secret.write_text('root only\n')
    theirs = tmp_path / 'theirs'
    theirs.mkdir()
    os.chown(theirs, OTHER, OTHER)
    os.link(secret, theirs / 'pg_hba.conf')
    with pytest.raises(WazoHaError, match='2 links'):
        read_no_follow(str(theirs / 'pg_hba.conf'))


def test_a_hard_link_in_roots_own_directory_is_read(tmp_path):
    (tmp_path / 'a').write_text('text\n')
    os.link(tmp_path / 'a', tmp_path / 'b')
    assert read_no_follow(str(tmp_path / 'b')) == 'text\n'


def test_remove_takes_the_link_away_not_what_it_points_to(tmp_path):
    target = tmp_path / 'target'
    target.write_text('kept\n')
    theirs = tmp_path / 'theirs'
    theirs.mkdir()
    os.chown(theirs, OTHER, OTHER)
    os.symlink(target, theirs / 'wazo-ha.conf')
    assert unlink_no_follow(str(theirs / 'wazo-ha.conf'))
    assert not os.path.lexists(theirs / 'wazo-ha.conf') and target.read_text() == 'kept\n'
    assert not unlink_no_follow(str(theirs / 'wazo-ha.conf'))
