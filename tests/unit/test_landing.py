"""What a file brought back from the slave may be on the master (landing.landing)."""

import stat

from wazo_ha_common.decisions.failback import landing


def test_a_regular_file_gets_the_directorys_owner_and_loses_its_special_and_exec_bits():
    decision = landing(stat.S_IFREG | 0o6755, 4321, 4322)
    assert (decision.keep, decision.uid, decision.gid, decision.mode) == (True, 4321, 4322, 0o644)


def test_a_root_only_file_keeps_its_permissions_under_the_directorys_owner():
    decision = landing(stat.S_IFREG | 0o600, 4321, 4321)
    assert (decision.keep, decision.uid, decision.mode) == (True, 4321, 0o600)


def test_a_directory_loses_set_gid_sticky_and_group_write():
    decision = landing(stat.S_IFDIR | 0o3775, 7, 8)
    assert (decision.keep, decision.uid, decision.gid, decision.mode) == (True, 7, 8, 0o755)


def test_links_devices_fifos_and_sockets_are_removed():
    for kind in (stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
        assert not landing(kind | 0o777, 4321, 4321).keep, kind


def test_no_world_write_and_the_owner_always_reads_and_writes():
    assert landing(stat.S_IFREG | 0o777, 1, 1).mode == 0o644
    assert landing(stat.S_IFREG | 0o000, 1, 1).mode == 0o600
    assert landing(stat.S_IFDIR | 0o1777, 1, 1).mode == 0o755
    assert landing(stat.S_IFDIR | 0o000, 1, 1).mode == 0o700
