"""The HA commands as jobs: one table of their names, locks, records, mails and cron periods,
read by bin/, cli, pause, status and the package; and the typed record of a job's last run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from .adapters.system import read_state, write_state

PERIOD_NAMES = {60: 'minute', 3600: 'hour'}

# what went wrong in a failed run, for wazo-ha-status (which would otherwise read the text)
SCHEMA_MISMATCH = 'schema-mismatch'   # the two nodes do not run the same Wazo version
FAILED = 'failed'                     # anything else


@dataclass(frozen=True)
class Job:
    name: str                   # the command; its lock is NAME.lock, its log lines say NAME
    state_file: str | None      # its last run, under [paths] state_dir, for wazo-ha-status
    mail_subject: str | None    # a failure of a scheduled run mails root with this subject
    cron_period: int | None     # seconds: a cron start runs once per period (see schedule)
    # settings sections whose mistakes stop the job (None: all); a mistake elsewhere is
    # reported (log, one mail, wazo-ha-status) and that key keeps its default
    strict_sections: tuple[str, ...] | None = None

    @property
    def period_name(self) -> str:
        return PERIOD_NAMES[self.cron_period] if self.cron_period else 'run'


REPLICATION = Job('xivo-master-slave-db-replication', 'replication.json',
                  'Slave replication failed', 3600)
SYNC = Job('wazo-sync', 'sync.json', 'Slave file synchronisation failed', 3600)
# the failover check never stops probing for a mistake in a section it does not read
CHECK = Job('xivo-check-master-status', 'check.json', None, 60, ('paths', 'check', 'mail'))
SERVICES = Job('xivo-manage-slave-services', 'services.json', None, None)
STREAM = Job('wazo-ha-stream', 'stream.json', 'Slave continuous replication failed', 60)
CONFIG = Job('wazo-ha-config', None, None, None)
# `wazo-ha-config converge`, every minute on every role: the node's access follows ha.conf
CONVERGE = Job('wazo-ha-config-converge', 'converge.json', None, 60)
CONFIG_CHECK = Job('wazo-ha-config', None, None, None, ())   # lists every mistake itself
STATUS = Job('wazo-ha-status', None, None, None, ('paths',))   # shows the others' mistakes

# the settings mistakes already mailed by a cron-started job (mailed once each)
SETTINGS_PROBLEMS_FILE = 'settings-problems.json'

# the replication's last verification by content (see replication.job), for wazo-ha-status
VERIFICATION_FILE = 'replication-verification.json'

ALL = (REPLICATION, SYNC, CHECK, STREAM, CONVERGE, SERVICES, CONFIG, STATUS)
SCHEDULED = tuple(job for job in ALL if job.cron_period)   # what pause holds


@dataclass(frozen=True)
class LastRun:
    """How a job's last run ended; `details` holds what the job adds (counts, tables...)."""
    result: str                 # ok, failed, not set up
    finished_at: float
    sentence: str = ''          # its closing sentence, or the error
    error_kind: str | None = None
    details: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LastRun | None:
        """The record as written, None when it is missing or not of this shape."""
        try:
            run = cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        except TypeError:
            return None
        types = {'result': str, 'finished_at': (int, float), 'sentence': str,
                 'error_kind': (str, type(None)), 'details': (dict, type(None))}
        if not all(isinstance(getattr(run, k), t) for k, t in types.items()):
            return None
        return run

    @property
    def ok(self) -> bool:
        return self.result == 'ok'


def save_last_run(state_dir: str, job: Job, run: LastRun) -> None:
    write_state(state_dir, job.state_file, run.as_dict())


def load_last_run(state_dir: str, job: Job) -> LastRun | None:
    return LastRun.from_dict(read_state(state_dir, job.state_file))
