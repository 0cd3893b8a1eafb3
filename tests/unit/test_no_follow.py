"""Files root reads or removes in a directory another user owns (adapters.system): no link
followed, no hard link read."""

import os

import pytest

from wazo_ha_common.adapters.system import read_no_follow, unlink_no_follow, write_atomic
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


def test_the_textfile_is_not_written_through_a_link_in_node_exporters_directory(tmp_path):
    """Review of issue 25: node exporter's textfile directory is another user's; that user
    replaces it by a link to a directory of root's: nothing is written there."""
    from wazo_ha_common import monitoring
    roots = tmp_path / 'cron.d'
    roots.mkdir()
    theirs = tmp_path / 'prometheus'
    theirs.mkdir()
    os.chown(theirs, OTHER, OTHER)
    os.symlink(roots, theirs / 'node-exporter')
    with pytest.raises(OSError):
        monitoring.write_textfile(str(theirs / 'node-exporter' / 'wazo_ha.prom'), 'x 1\n')
    assert os.listdir(roots) == []


def test_the_textfile_replaces_a_link_standing_at_its_name(tmp_path):
    """The file's own name made a link to a file of root's: the link is replaced, the file it
    pointed to keeps its content and its mode."""
    from wazo_ha_common import monitoring
    shadow = tmp_path / 'shadow'
    shadow.write_text('root:secret\n')
    os.chmod(shadow, 0o600)
    theirs = tmp_path / 'node-exporter'
    theirs.mkdir()
    os.chown(theirs, OTHER, OTHER)
    os.symlink(shadow, theirs / 'wazo_ha.prom')
    assert monitoring.write_textfile(str(theirs / 'wazo_ha.prom'), 'x 1\n')
    prom = theirs / 'wazo_ha.prom'
    assert not prom.is_symlink() and prom.read_text() == 'x 1\n'
    assert os.stat(prom).st_mode & 0o777 == 0o644 and os.stat(prom).st_uid == 0
    assert shadow.read_text() == 'root:secret\n' and os.stat(shadow).st_mode & 0o777 == 0o600


def test_write_atomic_names_its_temporary_file_unpredictably_and_leaves_none(tmp_path):
    """Every caller of write_atomic (the summary, ha.conf, state files) goes the same way: a
    temporary name planted in advance is neither followed nor reused."""
    target = tmp_path / 'elsewhere'
    target.write_text('kept\n')
    for guess in ('.status.json.tmp', '.status.json.'):
        os.symlink(target, tmp_path / guess)
    write_atomic(str(tmp_path / 'status.json'), '{}\n', mode=0o640)
    assert (tmp_path / 'status.json').read_text() == '{}\n'
    assert os.stat(tmp_path / 'status.json').st_mode & 0o777 == 0o640
    assert target.read_text() == 'kept\n'
    assert sorted(os.listdir(tmp_path)) == ['.status.json.', '.status.json.tmp', 'elsewhere',
                                            'status.json']


def test_a_file_changed_between_our_read_and_our_rename_is_not_overwritten(tmp_path):
    """write_no_follow(expect=...) reads the file again just before its rename."""
    from wazo_ha_common.adapters.system import ChangedMeanwhile, write_no_follow
    target = tmp_path / 'pg_hba.conf'
    target.write_text('sysconfd wrote this\n')
    with pytest.raises(ChangedMeanwhile):
        write_no_follow(str(target), 'ours\n', mode=0o640, expect='what we read\n')
    assert target.read_text() == 'sysconfd wrote this\n'
    assert os.listdir(tmp_path) == ['pg_hba.conf'], 'no temporary file left'
    write_no_follow(str(target), 'ours\n', mode=0o640, expect='sysconfd wrote this\n')
    assert target.read_text() == 'ours\n'


def test_a_sed_between_the_converges_read_and_its_rename_is_kept(tmp_path, monkeypatch):
    """wazo-sysconfd's `sed -i` (a new file renamed over pg_hba.conf) lands in the window
    between pg_files.apply's read and its rename: its line is kept, our block written on it."""
    from wazo_ha_common import settings
    from wazo_ha_common.access import pg_files
    from wazo_ha_common.adapters import system
    conf = tmp_path / 'pgdata'
    conf.mkdir()
    hba = conf / 'pg_hba.conf'
    hba.write_text('local all postgres peer\nhost asterisk postgres 198.18.0.9/32 trust\n')
    config = tmp_path / 'config.ini'
    config.write_text(f'[paths]\npostgresql_conf_dir = {conf}\nstate_dir = {tmp_path}\n'
                      f'[database]\nreload_command = /bin/true\n')
    real = system._read_at
    seds = []

    def sed_first(dir_fd, name):
        if not seds:  # sysconfd: sed -i '/^host asterisk postgres/d' then appends its line
            seds.append(name)
            fresh = conf / '.sed-tmp'
            fresh.write_text('local all postgres peer\n'
                             'host asterisk postgres 198.18.0.1/32 trust\n')
            os.rename(fresh, hba)
        return real(dir_fd, name)
    monkeypatch.setattr(system, '_read_at', sed_first)
    applied = pg_files.apply(settings.load(str(config)),
                             pg_files.Wanted(master_ip='198.18.0.1', listen='198.18.0.2'))
    assert seds == ['pg_hba.conf'] and applied.hba_changed
    text = hba.read_text()
    assert 'host asterisk postgres 198.18.0.1/32 trust' in text, "sysconfd's line is kept"
    assert '198.18.0.9' not in text
    assert 'wazo_ha_replication' in text and '198.18.0.1/32' in text, text
