"""xivo-master-slave-db-replication: copy the master's configuration database to the slave.

The master is read from one REPEATABLE READ snapshot; the slave is written in one
transaction, so it holds either its old content or the new copy, never a mix. Tables that
did not change on either node since the last run (see tracking), or whose content already
matches, are not rewritten nor locked for writing.

decisions/replication: the pure decisions (thresholds at the top); nodes: the two
connections; compare: what differs; write: the slave's transaction; job: the run.
"""

from .compare import SchemaMismatch
from .job import (DEFECT_MAIL_SUBJECT, MAIL_SUBJECT, NAME, STATE_FILE, TRACKING_FILE,
                  VERIFY_STATE_FILE, Result, run)
from ..decisions.replication import (WritePlan, is_excluded, orphan_action, orphan_keys,
                                     schema_differences, split_tables, truncatable,
                                     verification_due, write_plan)
from .write import ConstraintRebuildFailed

__all__ = ['NAME', 'STATE_FILE', 'MAIL_SUBJECT', 'TRACKING_FILE', 'Result', 'run',
           'SchemaMismatch', 'ConstraintRebuildFailed', 'WritePlan', 'is_excluded',
           'schema_differences', 'split_tables', 'truncatable', 'write_plan', 'orphan_action',
           'orphan_keys', 'VERIFY_STATE_FILE', 'DEFECT_MAIL_SUBJECT', 'verification_due']
