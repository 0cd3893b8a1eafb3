"""The SSH connection shared by a replication run's reads of the failback record: its private
directory goes with the run, and one a killed run left is swept by a later run's first read
(made under the replication's instance lock), never by a run that reads nothing."""

import os
import tempfile
import time

from wazo_ha_common import settings
from wazo_ha_common.files import sync


def test_a_killed_runs_directory_is_swept_and_nothing_else(tmp_path, monkeypatch):
    top = tmp_path / 'tmp'
    top.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(top))
    config = tmp_path / 'config.ini'
    config.write_text(f'[paths]\nstate_dir = {tmp_path}\nlog_file = {tmp_path}/log\n'
                      f'[sync]\nshared_connection_idle = 30\nssh_key = {tmp_path}/xivo_id_rsa\n')
    s = settings.load(str(config))
    stale, recent = top / 'wazo-ha-ssh-stale', top / 'wazo-ha-ssh-recent'
    for d in (stale, recent):
        d.mkdir(mode=0o700)
    old = time.time() - 30 - 61
    os.utime(stale, (old, old))
    elsewhere = tmp_path / 'elsewhere'
    elsewhere.mkdir()
    (elsewhere / 'kept').write_text('x')
    link = top / 'wazo-ha-ssh-link'
    link.symlink_to(elsewhere)
    os.utime(link, (old, old), follow_symlinks=False)
    with sync.serving_reader(s):  # a run the instance lock sends away: it reads nothing
        pass
    assert stale.exists(), 'swept by a run that never read (it may hold no lock)'
    with sync.serving_reader(s) as serving:
        assert stale.exists()
        # (no key here: the read says so and opens no connection)
        assert 'no key' in serving('198.18.0.2')
        during = sorted(p.name for p in top.iterdir())
    assert not stale.exists(), 'older than the idle time: its connection is gone'
    assert recent.exists(), 'may be a run under way'
    assert link.is_symlink() and (elsewhere / 'kept').exists(), 'a link is never followed'
    assert len(during) == 3 and 'wazo-ha-ssh-stale' not in during, during
    assert sorted(p.name for p in top.iterdir()) == ['wazo-ha-ssh-link', 'wazo-ha-ssh-recent'], \
        "the run's own directory goes with it"
