"""What every bin/ entry point shares: settings, logging, errors mapped to exit codes."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import threading
import time
from typing import Callable

from . import __version__, schedule, settings as settings_module
from .errors import LockBusyError, WazoHaError, WrongRoleError
from .jobs import Job
from .settings import Settings
from .adapters.system import read_state, send_mail, setup_logging, single_instance, write_state

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
    # a settings mistake met under cron is mailed once, whether or not the job keeps a period
    # (wazo-ha-status --write-summary runs every minute without one)
    under_cron = cron and schedule.started_by_cron()
    by_cron = cron_period is not None and under_cron
    try:
        settings = settings_module.load(args.config, strict=job.strict_sections)
    except WazoHaError as e:
        if under_cron and _settings_failed_under_cron(prog, args, e):
            return e.exit_code
        print(f'{prog}: error: {e}', file=sys.stderr)
        return e.exit_code
    setup_logging(prog, settings.paths.log_file, args.verbose)
    for problem in settings.problems:
        logger.error('settings: %s (ignored by %s: not one of its sections; the key keeps its '
                     'default)', problem.text, prog)
    if under_cron:
        mail_settings_problems(settings, prog, [p.text for p in settings.problems])
    # errors that Python would print as tracebacks (in threads, in C extensions' callbacks)
    # go to the log: stderr keeps one line per failure
    sys.unraisablehook = lambda u: logger.debug('ignored: %s: %s', u.exc_type.__name__, u.exc_value)
    threading.excepthook = lambda a: logger.debug('thread %s: %s', a.thread, a.exc_value)
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


def _settings_failed_under_cron(prog: str, args: argparse.Namespace, error: WazoHaError) -> bool:
    """A cron-started job stopped by its settings: logged and mailed once per mistake, not
    printed (cron would mail the output every minute). False when even that is impossible."""
    try:
        settings, problems = settings_module.read(args.config)
    except WazoHaError:
        return False  # no settings file at all: the one-line error goes to cron
    setup_logging(prog, settings.paths.log_file, args.verbose)
    logger.error('settings: %s: %s does not run until it is corrected (wazo-ha-config check)',
                 error, prog)
    mail_settings_problems(settings, prog, [p.text for p in problems] or [str(error)],
                           stopped=str(error))
    return True


def mail_settings_problems(settings: Settings, prog: str, texts: list[str],
                           stopped: str | None = None) -> None:
    """Mail root the settings mistakes not mailed yet (jobs.SETTINGS_PROBLEMS_FILE keeps the
    ones mailed); none left: the record is cleared, so a mistake made again mails again."""
    from .jobs import SETTINGS_PROBLEMS_FILE
    state_dir = settings.paths.state_dir
    try:
        with single_instance(settings.paths.lock_dir, 'settings-problems', wait=10):
            mailed = read_state(state_dir, SETTINGS_PROBLEMS_FILE).get('mailed')
            mailed = mailed if isinstance(mailed, list) else []
            new = [t for t in texts if t not in mailed]
            if mailed != texts and (texts or mailed):
                write_state(state_dir, SETTINGS_PROBLEMS_FILE, {'mailed': list(texts)})
    except (WazoHaError, OSError) as e:
        logger.error('cannot record the settings mistakes mailed: %s', e)
        return
    if not new:
        return
    host = socket.gethostname()
    effect = (f'{prog} does not run until this is corrected' if stopped else
              f'{prog} runs, with the default value of each key named here')
    send_mail(settings.mail.sendmail, settings.mail.recipient,
              f'wazo-ha settings error on {host}: ' + new[0][:150],
              f'{prog} on {host} found mistakes in the wazo-ha settings:\n\n'
              + ''.join(f'- {t}\n' for t in texts)
              + f'\n{effect}. Check a change with: wazo-ha-config check\n'
                f'This mail is not repeated while the mistakes stay the same.\n')
