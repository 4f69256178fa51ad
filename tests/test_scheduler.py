"""The nightly schedule persists in the application database with the configured cron."""

import pytest
from sqlalchemy import create_engine, text

from knowledge.errors import ConfigError
from knowledge.settings import ScheduleConfig, Settings
from learner.scheduler import JOB_ID, build_scheduler


def test_job_is_stored_in_the_database_with_cron(tmp_path):
    settings = Settings(
        home=tmp_path, profile="sandbox", schedule=ScheduleConfig(cron="30 3 * * *")
    )
    tmp_path.mkdir(exist_ok=True)
    scheduler = build_scheduler(settings, blocking=False)
    scheduler.start(paused=True)
    try:
        job = scheduler.get_job(JOB_ID)
        assert job.kwargs == {"profile": "sandbox"}
        assert (job.trigger.fields[5].name, str(job.trigger.fields[5])) == ("hour", "3")
        assert str(job.trigger.fields[6]) == "30"
        assert job.coalesce and job.max_instances == 1
    finally:
        scheduler.shutdown(wait=False)
    with create_engine(settings.db_url).connect() as conn:
        ids = [row[0] for row in conn.execute(text("select id from apscheduler_jobs"))]
    assert ids == [JOB_ID]
    # a second scheduler process replaces, not duplicates, the job
    again = build_scheduler(settings, blocking=False)
    again.start(paused=True)
    again.shutdown(wait=False)
    with create_engine(settings.db_url).connect() as conn:
        assert conn.execute(text("select count(*) from apscheduler_jobs")).scalar() == 1


def test_bad_cron_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="crontab"):
        build_scheduler(
            Settings(home=tmp_path, schedule=ScheduleConfig(cron="every night")), blocking=False
        )
