"""The nightly schedule: APScheduler 3.x with its job store in the application database.

    protege schedule            # runs until stopped, one cycle per cron tick
    schedule.in_server: true    # or: `protege serve` runs the same job (start_in_server)

`coalesce` folds missed ticks into one run, `max_instances=1` keeps one cycle per scheduler, and
`misfire_grace_time` lets a scheduler that was down at the tick still run it when it comes back.
The job calls the same `run_cycle` as `protege train --now`. Several schedulers (processes or
hosts) may share the job store: each runs the job at the tick, and the database lease in
`run_cycle` lets exactly one of them train; the others log that they were skipped.
"""

from __future__ import annotations

import logging

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger

from knowledge.errors import ConfigError, CycleBusyError
from knowledge.settings import Settings, load_settings

log = logging.getLogger("protege.scheduler")
JOB_ID = "nightly-cycle"


def scheduled_cycle(profile: str) -> None:
    """The job: importable by reference, so the persistent job store can hold it."""
    from learner.pipeline import run_cycle

    try:
        result = run_cycle(load_settings(profile), trigger="schedule", progress=False)
    except CycleBusyError as exc:  # another scheduler (or `train --now`) got there first
        log.warning("scheduled cycle skipped: %s", exc)
        return
    except Exception as exc:  # the run's row holds the same message
        from learner.failures import describe_failure

        log.error("scheduled cycle failed: %s", describe_failure(exc, load_settings(profile)))
        return
    log.info("scheduled cycle: run %s %s: %s", result.run_id, result.status, result.message)


def build_scheduler(settings: Settings, *, blocking: bool = True) -> BaseScheduler:
    try:
        trigger = CronTrigger.from_crontab(
            settings.schedule.cron, timezone=settings.schedule.timezone
        )
    except ValueError as exc:
        raise ConfigError(
            f"schedule.cron {settings.schedule.cron!r} is not a valid crontab: {exc}"
        ) from exc
    cls = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = cls(
        jobstores={
            "default": SQLAlchemyJobStore(url=settings.db_url, tablename="apscheduler_jobs")
        },
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.schedule.misfire_grace_seconds,
        },
        timezone=settings.schedule.timezone,
    )
    scheduler.add_job(
        "learner.scheduler:scheduled_cycle",
        trigger=trigger,
        id=JOB_ID,
        name="protege nightly cycle",
        kwargs={"profile": settings.profile},
        replace_existing=True,
    )
    return scheduler


def start_in_server(settings: Settings) -> BaseScheduler | None:
    """With `schedule.in_server`, start the nightly job in this (server) process's background.

    Same job store and job as `protege schedule`; the caller shuts it down. The cycle then
    trains inside the serving process, sharing its CPU/GPU with the chats it answers.
    """
    if not settings.schedule.in_server:
        return None
    scheduler = build_scheduler(settings, blocking=False)
    scheduler.start()
    log.info("scheduler started in the server: cron %r", settings.schedule.cron)
    return scheduler
