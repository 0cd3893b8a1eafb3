"""services.json is a typed record written by failover.services alone: what it holds survives
a round trip, and a field of the wrong shape is dropped, never trusted."""

from wazo_ha_common.failover import services
from wazo_ha_common.failover.services import Record, record_from_dict


def test_a_record_survives_its_round_trip():
    record = Record(services.STARTED, 1700000000.5, ('start DHCP: boom',),
                    ('start the Wazo services',), ('start the Wazo services: exit 1',),
                    ('started', 'start the Wazo services'))
    assert record_from_dict(record.as_dict()) == record


def test_no_mail_key_is_not_written():
    assert 'mailed' not in Record(services.STOPPED, 1.0).as_dict()


def test_fields_of_the_wrong_shape_are_dropped():
    record = record_from_dict({'state': 'exploded', 'since': True, 'failed': 'x',
                               'pending': ['a', 3, None], 'critical': {'a': 1},
                               'mailed': 'started'})
    assert record == Record(None, None, (), ('a',), (), None)


def test_anything_but_an_object_is_no_record():
    for data in (None, [], 'started', 3):
        assert record_from_dict(data) == Record()


def test_pending_steps_are_those_of_the_same_action_only(tmp_path):
    class Paths:
        state_dir = str(tmp_path)

    class Settings:
        paths = Paths()

    steps = services.start_steps()
    services._save(Settings, Record(services.STARTED, 1.0, pending=(steps[-2].what,)))
    assert [s.what for s in services._pending(Settings, services.STARTED, steps)] == \
        [steps[-2].what]
    assert services._pending(Settings, services.STOPPED, services.stop_steps()) == []
