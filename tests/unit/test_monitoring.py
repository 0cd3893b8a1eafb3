"""The monitoring summary (what a non-root agent reads) and its Prometheus text."""

import json

import pytest

from prometheus_text import FormatError, parse
from wazo_ha_common import monitoring
from wazo_ha_common.jobs import LastRun
from wazo_ha_common.status import CRITICAL, OK, Facts, evaluate

NOW = 1_800_000_000.0


def slave(**kw):
    base = dict(role='slave', peer='198.18.0.1', peer_reachable=False, mode='continuous',
                decision={'decision': 'down', 'written_at': NOW - 30, 'sentence': 'silent 20 s',
                          'history': [1, 2, 3]},
                services={'state': 'started', 'since': NOW - 60, 'pending': True,
                          'critical': ['wazo-service start: exit 1'], 'last_action': 'started'},
                stream=LastRun('failed', NOW - 90, 'cannot connect: host=198.18.0.1 '
                               'password=s3cr3t dbname=asterisk', None, {'lag_seconds': 2.5}))
    base.update(kw)
    return Facts(**base)


def summary_of(facts):
    level, warnings = evaluate(facts, NOW)
    return monitoring.summary(facts, level, warnings, NOW)


def test_the_summary_holds_no_secret_and_no_history():
    data = summary_of(slave())
    text = json.dumps(data)
    assert 's3cr3t' not in text and 'password=***' in text
    assert 'history' not in text
    assert data['serving'] is True and data['decision'] == 'down' and data['failed_steps'] == 1
    assert data['status'] == CRITICAL


def test_prometheus_text_parses_and_says_role_decision_serving_ages_lag_failures():
    samples, types, helps = parse(monitoring.prometheus(summary_of(slave()), NOW))
    assert samples[('wazo_ha_role', (('role', 'slave'),))] == 1
    assert samples[('wazo_ha_role', (('role', 'master'),))] == 0
    assert samples[('wazo_ha_failover_decision', (('master', 'down'),))] == 1
    assert samples[('wazo_ha_failover_decision', (('master', 'up'),))] == 0
    assert samples[('wazo_ha_serving', ())] == 1
    assert samples[('wazo_ha_failed_steps', ())] == 1
    assert samples[('wazo_ha_status', ())] == CRITICAL
    assert samples[('wazo_ha_stream_lag_seconds', ())] == 2.5
    assert samples[('wazo_ha_last_run_age_seconds', (('job', 'stream'),))] == 90
    assert samples[('wazo_ha_last_run_failed', (('job', 'stream'),))] == 1
    assert samples[('wazo_ha_peer_reachable', ())] == 0
    assert set(types.values()) == {'gauge'} and set(types) == set(helps)


def test_a_master_has_replication_and_sync_ages_and_no_decision():
    facts = Facts(role='master', peer='198.18.0.2', peer_reachable=True, sync_key=True,
                  replication=LastRun('ok', NOW - 600, 'done'), sync=LastRun('ok', NOW - 300, 'ok'))
    data = summary_of(facts)
    samples, _, _ = parse(monitoring.prometheus(data, NOW))
    assert samples[('wazo_ha_last_run_age_seconds', (('job', 'replication'),))] == 600
    assert samples[('wazo_ha_last_run_age_seconds', (('job', 'sync'),))] == 300
    assert samples[('wazo_ha_last_run_timestamp_seconds', (('job', 'sync'),))] == NOW - 300
    assert samples[('wazo_ha_status', ())] == OK
    assert not any(name in ('wazo_ha_failover_decision', 'wazo_ha_serving')
                   for name, _ in samples)


def test_every_role_has_its_sample_one_of_them_1():
    data = summary_of(slave())
    data['role'] = 'corrupt'
    samples, _, _ = parse(monitoring.prometheus(data, NOW))
    roles = {dict(labels)['role']: v for (name, labels), v in samples.items()
             if name == 'wazo_ha_role'}
    assert roles == {'master': 0, 'slave': 0, 'disabled': 0, 'not configured': 0, 'corrupt': 1}


@pytest.mark.parametrize('bad', [
    'wazo_ha_status 1',                                       # no final newline
    'wazo ha 1\n',                                            # bad name
    'x{a="1} 1\n',                                            # unterminated value
    'x{a="\\q"} 1\n',                                         # bad escape
    'x 1\nx 2\n',                                             # duplicate
    'x 1\ny 1\nx 2\n',                                        # family not contiguous
    'x one\n',                                                # not a value
    'x 1\n# TYPE x gauge\n',                                  # TYPE after samples
    '# TYPE x sometimes\nx 1\n',                              # unknown type
])
def test_the_parser_refuses_malformed_text(bad):
    with pytest.raises(FormatError):
        parse(bad)


def test_a_summary_too_old_or_of_another_shape_is_unknown(tmp_path):
    data = summary_of(slave())
    monitoring.write(str(tmp_path), data)
    assert monitoring.read(str(tmp_path), NOW + 60)['role'] == 'slave'
    with pytest.raises(monitoring.SummaryError, match='written 600 s ago'):
        monitoring.read(str(tmp_path), NOW + 600)
    (tmp_path / monitoring.SUMMARY_FILE).write_text('{"status": 7}')
    with pytest.raises(monitoring.SummaryError, match='not a summary'):
        monitoring.read(str(tmp_path), NOW)
    with pytest.raises(monitoring.SummaryError, match='does not exist'):
        monitoring.read(str(tmp_path / 'none'), NOW)


def test_a_peers_control_characters_reach_no_terminal():
    """Review of issue 25: the slave's PostgreSQL error lines and rsync's stderr end up in
    sentences, the summary, the status and mails: no escape sequence, no bidirectional
    override, no carriage return survives."""
    from wazo_ha_common.adapters.db.session import first_line
    from wazo_ha_common.adapters.system import tail
    from wazo_ha_common.status import render
    hostile = 'FATAL: \x1b[2J\x1b]0;owned\x07role \u202edenied\r\x9b31m'
    for shown in (monitoring.scrub(hostile), tail(f'rsync: {hostile}\n'),
                  first_line(Exception(hostile)),
                  render(Facts(role='corrupt', error=hostile), CRITICAL, [hostile])):
        assert not any(c in shown for c in '\x1b\x07\r\u202e\x9b'), repr(shown)
        assert 'denied' in shown
    data = monitoring.summary(Facts(role='corrupt', error=hostile), CRITICAL, [hostile], 0.0)
    assert '\x1b' not in monitoring.render({**data, 'warnings': [hostile]})
