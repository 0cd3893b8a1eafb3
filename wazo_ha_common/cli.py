"""What every bin/ entry point shares: settings, logging, errors mapped to exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import Callable

from . import __version__, schedule, settings as settings_module
from .errors import LockBusyError, WazoHaError, WrongRoleError
from .jobs import Job
from .settings import Settings
from .adapters.system import send_mail, setup_logging

logger = logging.getLogger('wazo-ha')

Handler = Callable[[Settings, argparse.Namespace], int | None]


def parser(prog: str, description: str, epilog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', metavar='FILE',
                   help='settings file (default: $WAZO_HA_CONFIG or /etc/wazo-ha/config.ini)')
    p.add_argument('-v', '--verbose', action='store_true', help='also log every step to stderr')
    p.add_argument('--version', action='version', version=f'%(prog)s {__version__}')
    return p


def run(job: Job, args: argparse.Namespace, handler: Handler, cron: bool = True,
        mail: bool = True) -> int:
    """Load settings, set up logging, call handler; expected failures become one stderr line.

    Started by cron, the job runs once per its cron period whichever cron file started it
    (see schedule); a failure mails root when the job has a mail subject. cron/mail False:
    this kind of run (wazo-sync -i, --dry-run...) is neither."""
    prog = job.name
    mail_subject = job.mail_subject if mail else None
    cron_period = job.cron_period if cron else None
    try:
        settings = settings_module.load(args.config)
    except WazoHaError as e:
        print(f'{prog}: error: {e}', file=sys.stderr)
        return e.exit_code
    setup_logging(prog, settings.paths.log_file, args.verbose)
    # errors that Python would print as tracebacks (in threads, in C extensions' callbacks)
    # go to the log: stderr keeps one line per failure
    sys.unraisablehook = lambda u: logger.debug('ignored: %s: %s', u.exc_type.__name__, u.exc_value)
    threading.excepthook = lambda a: logger.debug('thread %s: %s', a.thread, a.exc_value)
    by_cron = cron_period is not None and schedule.started_by_cron()
    if by_cron:
        since = schedule.paused_since(settings.paths.state_dir)
        if since:
            logger.info('the HA cron jobs are paused (wazo-ha-config pause, %s): leaving; '
                        'wazo-ha-config resume starts them again', since)
            return 0
    try:
        claimed = not by_cron or schedule.claim(settings.paths.state_dir, prog, cron_period,
                                                time.time())
    except OSError as e:  # cannot record the period: run rather than skip
        logger.warning('cannot record this cron run in %s: %s', settings.paths.state_dir, e)
        claimed = True
    if not claimed:
        logger.info('another cron run of %s already started in this %s: leaving', prog,
                    job.period_name)
        return 0
    try:
        return handler(settings, args) or 0
    except WrongRoleError as e:  # not a failure: this node's role does not run the command
        logger.info('%s', e)
        print(f'{prog}: {e}')
        return 0
    except LockBusyError as e:
        if by_cron:
            logger.info('%s (started by another cron file?)', e)
            return 0
        logger.error('%s', e)
        print(f'{prog}: error: {e}', file=sys.stderr)
        return e.exit_code
    except WazoHaError as e:
        logger.error('%s', e)
        print(f'{prog}: error: {e}', file=sys.stderr)
        if mail_subject and e.exit_code == 1:
            send_mail(settings.mail.sendmail, settings.mail.recipient, mail_subject,
                      f'{prog} failed on this node:\n\n{e}\n\nSee {settings.paths.log_file}.\n')
        return e.exit_code
    except KeyboardInterrupt:
        logger.error('interrupted')
        print(f'{prog}: interrupted', file=sys.stderr)
        return 130
    except Exception as e:  # a bug: keep the traceback in the log, one line for the user
        logger.exception('unexpected error')
        print(f'{prog}: unexpected error: {type(e).__name__}: {e} '
              f'(traceback in {settings.paths.log_file})', file=sys.stderr)
        if mail_subject:
            send_mail(settings.mail.sendmail, settings.mail.recipient, mail_subject,
                      f'{prog} failed on this node: {type(e).__name__}: {e}\n')
        return 1
