import logging

from wazo_ha_common.adapters.system import read_state, write_state


def test_state_round_trip(tmp_path):
    write_state(str(tmp_path / 'state'), 'job.json', {'result': 'ok', 'rows': 3})
    assert read_state(str(tmp_path / 'state'), 'job.json') == {'result': 'ok', 'rows': 3}


def test_missing_or_corrupt_state_reads_as_empty_and_corrupt_is_logged(tmp_path, caplog):
    assert read_state(str(tmp_path), 'none.json') == {}
    for content in ('{"half":', '[1, 2]', 'null'):
        (tmp_path / 'bad.json').write_text(content)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger='wazo-ha'):
            assert read_state(str(tmp_path), 'bad.json') == {}
        assert 'bad.json is corrupt: ignored' in caplog.text, content


def test_a_state_that_cannot_be_written_is_logged_not_raised(tmp_path, caplog):
    (tmp_path / 'state').write_text('a file where the directory should be')
    with caplog.at_level(logging.ERROR, logger='wazo-ha'):
        write_state(str(tmp_path / 'state'), 'job.json', {'result': 'ok'})
    assert 'cannot record' in caplog.text and 'job.json' in caplog.text
