import os
import shutil
import tempfile

import pytest

from testbed import Testbed, template_cluster


@pytest.fixture(scope='session')
def session_dir():
    path = tempfile.mkdtemp(prefix='wazo-ha-tests-')
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope='session')
def pg_template(session_dir):
    return template_cluster(session_dir)


@pytest.fixture
def bed(session_dir, pg_template):
    testbed = Testbed(session_dir, pg_template)
    try:
        testbed.start()
        yield testbed
    finally:
        testbed.close()


@pytest.fixture
def pair(bed):
    """A master node (198.18.0.1) and a slave node (198.18.0.2), HA not yet configured."""
    return bed.add_node('master', 1), bed.add_node('slave', 2)
