import os
import subprocess
import sys

import pytest

from wazo_ha_common import jobs
from wazo_ha_common.jobs import LastRun
from wazo_ha_common.status import CRITICAL, OK, WARNING, Facts, evaluate, render

NOW = 1_800_000_000.0


def master(**kw):
    base = dict(role='master', peer='198.18.0.2', peer_reachable=True, sync_key=True,
                replication=LastRun('ok', NOW - 600, 'replication done', None,
                                    {'duration': 1.2, 'tables_copied': ['userfeatures'],
                                     'tables_unchanged': 3, 'tables_excluded': ['cel']}),
                sync=LastRun('ok', NOW - 600, 'synced'))
    base.update(kw)
    return Facts(**base)


def slave(**kw):
    base = dict(role='slave', peer='198.18.0.1', peer_reachable=True,
                decision={'decision': 'up', 'written_at': NOW - 30, 'sentence': 'standby'},
                services={'state': 'stopped', 'since': NOW - 3600})
    base.update(kw)
    return Facts(**base)


def test_healthy_master_and_slave_are_ok():
    assert evaluate(master(), NOW) == (OK, [])
    assert evaluate(slave(), NOW) == (OK, [])


def test_old_replication_is_a_warning():
    facts = master(replication=LastRun('ok', NOW - 3 * 3600))
    level, warnings = evaluate(facts, NOW)
    assert level == WARNING and 'more than 2 hours' in warnings[0]


def test_a_held_replication_is_no_failure_but_warns_after_2_hours_without_a_copy():
    said = 'the database of the slave 198.18.0.2 is left alone: it serves telephony since ...'
    recent = master(replication=LastRun('held', NOW - 60, said, None,
                                        {'last_copied_at': NOW - 3600}))
    assert evaluate(recent, NOW) == (OK, [])
    assert 'held: the database of the slave' in render(recent, OK, [])
    for copied in (NOW - 3 * 3600, None):  # long ago, or never since the holds began
        old = master(replication=LastRun('held', NOW - 60, said, None,
                                         {'last_copied_at': copied}))
        level, warnings = evaluate(old, NOW)
        assert level == WARNING and warnings == [
            f'WARNING: no actual database copy for more than 2 hours: {said}'], copied


def test_failed_replication_with_schema_mismatch_is_critical():
    facts = master(replication=LastRun('failed', NOW, 'the schemas differ', jobs.SCHEMA_MISMATCH))
    level, warnings = evaluate(facts, NOW)
    assert level == CRITICAL
    assert any('different Wazo schema versions' in w for w in warnings)
    # the kind decides, not the wording of the error
    other = master(replication=LastRun('failed', NOW, 'both nodes must run the same Wazo version',
                                       jobs.FAILED))
    assert not any('different Wazo schema versions' in w for w in evaluate(other, NOW)[1])


@pytest.mark.parametrize('data', [
    {'result': 'ok'},                                             # no finished_at
    {'result': 'ok', 'finished_at': '5'},                         # wrong type
    {'result': 'ok', 'finished_at': 5.0, 'details': 'x'},
    {'result': 'ok', 'finished_at': 5.0, 'unknown': 1, 'error_kind': 3},
])
def test_a_last_run_record_of_another_shape_is_no_record(data):
    assert LastRun.from_dict(data) is None


def test_a_last_run_record_round_trips():
    run = LastRun('failed', 5.0, 'boom', jobs.SCHEMA_MISMATCH, {'rows': 3})
    assert LastRun.from_dict(run.as_dict()) == run


def test_status_and_pause_do_not_load_the_database_driver():
    code = ('import sys; import wazo_ha_common.status, wazo_ha_common.pause; '
            'sys.exit(1 if "psycopg2" in sys.modules else 0)')
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert subprocess.run([sys.executable, '-c', code], cwd=repo).returncode == 0


def test_sync_not_set_up_is_a_warning():
    level, warnings = evaluate(master(sync_key=False), NOW)
    assert level == WARNING and 'wazo-sync -i' in warnings[0]


def test_both_nodes_active_is_critical():
    level, warnings = evaluate(slave(services={'state': 'started'}), NOW)
    assert level == CRITICAL and 'both nodes active' in warnings[0]


def test_failover_in_progress_is_a_warning_not_critical():
    facts = slave(peer_reachable=False, decision={'decision': 'down', 'written_at': NOW},
                  services={'state': 'started'})
    level, warnings = evaluate(facts, NOW)
    assert level == WARNING and 'failover' in warnings[0]


def test_check_not_running_is_a_warning():
    level, warnings = evaluate(slave(decision={'decision': 'up', 'written_at': NOW - 600}), NOW)
    assert level == WARNING and 'has not run' in warnings[0]


def test_corrupt_ha_conf_is_critical():
    assert evaluate(Facts(role='corrupt', error='ha.conf is corrupt'), NOW)[0] == CRITICAL


def test_render_names_every_section():
    text = render(master(), OK, [])
    assert 'role: master' in text and 'last replication:' in text and 'last sync:' in text
    text = render(slave(), OK, [])
    assert 'failover decision: master up' in text and 'slave services: stopped' in text


def test_paused_cron_jobs_are_a_warning_that_explains_the_silence():
    since = '2026-11-26 09:00:00 +0000 by root'
    level, warnings = evaluate(slave(decision={'decision': 'up', 'written_at': NOW - 3600}, paused=since), NOW)
    assert level == WARNING
    assert warnings == [f'WARNING: the HA cron jobs are paused since {since}: no replication, '
                        'file sync or failover until wazo-ha-config resume']
    level, warnings = evaluate(master(paused=since), NOW)
    assert level == WARNING and 'paused since' in warnings[0]
    assert '(HA cron jobs paused)' in render(master(paused=since), level, warnings)


def test_the_last_verification_is_shown_with_what_it_found():
    text = render(master(), OK, [])
    assert 'last verification: never' in text
    found = master(verification={'finished_at': NOW - 60, 'by_hand': True,
                                 'differing': ['extensions', 'voicemail'],
                                 'missed_by_tracking': ['extensions']})
    line = [x for x in render(found, OK, []).splitlines() if x.startswith('last verification')][0]
    assert '(by hand), 2 tables differed, repaired; missed by tracking: extensions' in line
    equal = master(verification={'finished_at': NOW - 60, 'differing': [], 'missed_by_tracking': []})
    assert 'every copied table equal' in render(equal, OK, [])


def test_a_failed_failover_step_is_critical():
    facts = slave(decision={'decision': 'down', 'written_at': NOW - 30},
                  services={'state': 'started', 'last_action': 'started',
                            'pending': ['apply the replicated configuration'],
                            'critical': ['apply the replicated configuration: exit status 1']})
    level, warnings = evaluate(facts, NOW)
    assert level == CRITICAL
    assert any(w.startswith('CRITICAL: failover failed: apply the replicated configuration')
               for w in warnings), warnings


def test_a_failed_failback_step_is_critical():
    facts = slave(services={'state': 'stopped', 'last_action': 'stopped',
                            'pending': ['keep them stopped at boot'],
                            'critical': ['keep them stopped at boot: exit status 1']})
    level, warnings = evaluate(facts, NOW)
    assert level == CRITICAL and 'failback failed' in warnings[0]


def test_a_check_record_with_a_bad_time_is_a_warning_not_a_crash():
    level, warnings = evaluate(slave(decision={'decision': 'up', 'written_at': '5'}), NOW)
    assert level == WARNING and 'has not run for more than 3 minutes' in warnings[0]


STREAMING = LastRun('ok', NOW - 30, 'streaming from the master 198.18.0.1: lag 0.3 s', None,
                    {'mode': 'continuous', 'lag_seconds': 0.3, 'lagging': False,
                     'retained_wal_bytes': 3 * 1048576,
                     'last_hand_off': {'at': NOW - 7200, 'reason': 'first hand-off',
                                       'planned': True, 'sentence': '12 tables copied'}})


def test_a_streaming_slave_shows_its_lag_retained_wal_and_last_hand_off():
    facts = slave(mode='continuous', stream=STREAMING)
    level, warnings = evaluate(facts, NOW)
    assert (level, warnings) == (OK, [])
    text = render(facts, level, warnings)
    assert 'replication mode: continuous' in text
    assert 'lag at most 0.3 s, 3.0 MB of WAL held on the master' in text
    assert 'last hand-off:' in text and '(first hand-off): 12 tables copied' in text


@pytest.mark.parametrize('stream, level, said', [
    (None, WARNING, 'has not run yet'),
    (LastRun('ok', NOW - 600, 'streaming', None, {'lagging': False}), WARNING,
     'has not run for more than 3 minutes'),
    (LastRun('ok', NOW - 30, 'streaming', None, {'lagging': True}), WARNING, 'behind the master'),
    (LastRun('failed', NOW - 30, 'cannot connect', jobs.FAILED, {}), CRITICAL, 'last run failed'),
    (LastRun('failed', NOW - 30, 'schemas differ', jobs.SCHEMA_MISMATCH, {}), CRITICAL,
     'different Wazo schema versions'),
])
def test_stream_troubles_are_warnings_or_critical(stream, level, said):
    got, warnings = evaluate(slave(mode='continuous', stream=stream), NOW)
    assert got == level and any(said in w for w in warnings), warnings


def test_a_serving_slave_in_continuous_mode_does_not_warn_about_the_stream():
    facts = slave(mode='continuous', stream=None,
                  decision={'decision': 'down', 'written_at': NOW - 30})
    assert not any('continuous' in w for w in evaluate(facts, NOW)[1])


def test_a_continuous_master_shows_its_last_run_as_it_said_it():
    said = ('continuous replication to 198.18.0.2: the slave streams on slot wazo_ha_slot_1 '
            '(active, 0.3 MB of WAL held); publication unchanged, 2 sequences moved forward')
    facts = master(mode='continuous', replication=LastRun('ok', NOW - 600, said, None, {}))
    text = render(facts, *evaluate(facts, NOW))
    assert 'replication mode: continuous' in text and said in text


def test_a_pending_postgresql_restart_is_a_warning_on_every_role():
    pending = LastRun('ok', NOW - 30, 'node access converged', None,
                      {'pending_restart': ['listen_addresses', 'wal_level']})
    for facts in (master(access=pending), slave(access=pending),
                  Facts(role='disabled', access=pending)):
        level, warnings = evaluate(facts, NOW)
        assert level == WARNING
        assert warnings == ['WARNING: PostgreSQL must be restarted for listen_addresses, '
                            'wal_level to take effect (written by wazo-ha; systemctl restart '
                            'postgresql)']
    done = LastRun('ok', NOW - 30, 'node access converged', None, {'pending_restart': []})
    assert evaluate(master(access=done), NOW) == (OK, [])


def test_a_failed_converge_is_critical():
    failed = LastRun('failed', NOW - 30, 'psql failed', jobs.FAILED, {})
    level, warnings = evaluate(slave(access=failed), NOW)
    assert level == CRITICAL
    assert warnings == ['CRITICAL: node access does not follow ha.conf: psql failed '
                        '(wazo-ha-config converge tries again every minute)']


def test_a_converge_older_than_three_minutes_is_a_warning_unless_paused():
    old = LastRun('ok', NOW - 181, 'node access converged', None, {'pending_restart': []})
    assert evaluate(master(access=old), NOW) == (
        WARNING, ['WARNING: wazo-ha-config converge has not run for more than 3 minutes '
                  '(is cron running?)'])
    _, warnings = evaluate(master(access=old, paused='2026-12-06 18:00'), NOW)
    assert len(warnings) == 1 and 'paused since' in warnings[0]
    recent = LastRun('ok', NOW - 179, 'node access converged', None, {'pending_restart': []})
    assert evaluate(master(access=recent), NOW) == (OK, [])


def test_a_slave_without_admin_psql_warns_that_a_rebuilt_master_is_not_refused():
    """Review of issue 25: without [database] admin_psql the slave's converge cannot make its
    record of the master cluster (wazo_ha.origin): said, not silent."""
    level, warnings = evaluate(slave(origin_record=False), NOW)
    assert level == WARNING and warnings == [
        'WARNING: [database] admin_psql is empty: this slave keeps no record of the master '
        'cluster it copies from, a rebuilt master is not refused (README: Replacing a master)']
    assert evaluate(slave(origin_record=True), NOW) == (OK, [])


def test_both_nodes_say_which_replication_is_in_force_and_why():
    """Continuous mode, the stream not in force: the master's last run copied as in hourly
    mode and says why; the slave's control record says what it meets. Warnings, not failures:
    the hourly copies keep the slave no worse than hourly mode."""
    fallback = {'cause': 'not streaming', 'said': "the slave's slot wazo_ha_slot_1 is inactive",
                'fix': 'open TCP 5432 from the slave to the master (firewall)', 'since': NOW - 7200}
    facts = master(mode='continuous', replication=LastRun(
        'ok', NOW - 600, 'replication to 198.18.0.2 (hourly copy: ...)', None,
        {'fallback': fallback}))
    level, warnings = evaluate(facts, NOW)
    assert level == WARNING, warnings
    text = render(facts, level, warnings)
    assert "replication in force: hourly copies: the slave's slot wazo_ha_slot_1 is inactive " \
           'since ' in text and '(to stream: open TCP 5432 from the slave' in text, text
    streaming = master(mode='continuous', replication=LastRun('ok', NOW - 600, 'streams', None,
                                                              {'stream': {'slot': 's'}}))
    assert 'replication in force: continuous' in render(streaming, *evaluate(streaming, NOW))
    cause = {'cause': 'unreachable', 'said': "the slave cannot reach the master's 5432 "
             '(Connection refused)', 'since': '2027-01-15 08:00:00'}
    facts = slave(mode='continuous', stream_cause=cause,
                  stream=LastRun('failed', NOW - 30, 'Connection refused', jobs.FAILED, {}))
    level, warnings = evaluate(facts, NOW)
    assert level == WARNING, warnings
    text = render(facts, level, warnings)
    assert ("replication in force: hourly copies: the slave cannot reach the master's 5432 "
            '(Connection refused) since 2027-01-15 08:00:00 (to stream: open TCP 5432') in text
    assert 'replication in force: continuous' in render(slave(mode='continuous', stream=STREAMING),
                                                        OK, [])
    broken = slave(mode='continuous', stream_cause={'cause': 'broken', 'said': 'the stream is '
                   'broken: x', 'since': 'T'}, stream=LastRun('failed', NOW - 30, 'x',
                                                           jobs.FAILED, {}))
    assert evaluate(broken, NOW)[0] == CRITICAL
