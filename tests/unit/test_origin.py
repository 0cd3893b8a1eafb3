"""A rebuilt master never wipes the slave: the decision, from the slave's record."""

from wazo_ha_common.decisions import origin

OLD, NEW, MASTER = '7300000000000000001', '7400000000000000002', '198.18.0.1'


def test_the_first_copy_proceeds_and_records():
    d = origin.decide(origin.MISSING, NEW, MASTER, replace=False)
    assert (d.proceed, d.record) == (True, True) and NEW in d.sentence


def test_the_same_master_proceeds_silently():
    assert origin.decide(OLD, OLD, MASTER, replace=False) == origin.Decision(True, False, '')


def test_another_cluster_is_refused_with_the_sentence_of_the_issue():
    d = origin.decide(OLD, NEW, MASTER, replace=False)
    assert (d.proceed, d.record) == (False, False)
    assert d.sentence == ('the master at 198.18.0.1 is not the cluster this slave copied from '
                          '(rebuilt?): promote the slave or run with --replace-slave')


def test_replace_slave_proceeds_and_records_the_new_cluster():
    d = origin.decide(OLD, NEW, MASTER, replace=True)
    assert (d.proceed, d.record) == (True, True) and OLD in d.sentence and NEW in d.sentence


def test_a_slave_without_the_record_proceeds_and_says_how_to_get_it():
    d = origin.decide(origin.NO_TABLE, NEW, MASTER, replace=False)
    assert (d.proceed, d.record) == (True, False) and 'wazo-ha-config set' in d.sentence


# the slave's own look at the master (continuous mode): no failback to another cluster

def look(system, recorded=OLD, master=MASTER):
    return origin.Look(master, system, recorded, 1700000000.0)


def test_a_look_at_another_cluster_holds_the_failback_naming_the_master_and_the_fix():
    held = origin.failback_held(look(NEW), MASTER)
    assert held.startswith('the master at 198.18.0.1 is not the cluster this slave copied from '
                           '(rebuilt?): promote the slave or run with --replace-slave; this '
                           'slave keeps serving telephony')
    assert 'xivo-master-slave-db-replication --replace-slave --force on the master' in held


def test_nothing_holds_the_failback_to_the_same_cluster_or_without_a_record():
    assert origin.failback_held(look(OLD), MASTER) is None
    assert origin.failback_held(look(NEW, recorded=origin.MISSING), MASTER) is None
    assert origin.failback_held(look(NEW, recorded=origin.NO_TABLE), MASTER) is None
    assert origin.failback_held(None, MASTER) is None


def test_a_look_at_another_master_address_says_nothing_about_this_one():
    assert origin.failback_held(look(NEW, master='198.18.0.9'), MASTER) is None


def test_a_look_read_back_is_checked_field_by_field():
    data = {'master': MASTER, 'system': NEW, 'recorded': OLD, 'at': 1700000000.0}
    assert origin.look_from_dict(data) == look(NEW)
    assert origin.look_from_dict({}) is None
    for wrong, field in (({'system': 7}, 'system'), ({'at': 'now'}, 'at'),
                         ({'recorded': 5}, 'recorded'), ({'master': ''}, 'master'),
                         ({'at': float('nan')}, 'at')):
        try:
            origin.look_from_dict({**data, **wrong})
        except ValueError as e:
            assert str(e).startswith(field), e
        else:
            raise AssertionError(f'{wrong} accepted')
    try:
        origin.look_from_dict([1])
    except ValueError as e:
        assert 'not a JSON object' in str(e)
    else:
        raise AssertionError('a list accepted')
