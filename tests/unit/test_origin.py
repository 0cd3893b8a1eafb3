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
