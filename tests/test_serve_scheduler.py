"""`schedule.in_server`: `protege serve` runs the nightly job itself (learner/scheduler.py).

.venv/bin/python -m pytest tests/test_serve_scheduler.py -q
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from assistant.app import create_app
from assistant.server import serve_in_thread
from knowledge.db import open_database
from knowledge.settings import ModelsConfig, ScheduleConfig, ServingConfig, Settings
from learner.scheduler import JOB_ID


def _jobs(db_url: str) -> list[tuple]:
    with open_database(db_url).connect() as conn:
        return list(conn.execute(text("select id, next_run_time from apscheduler_jobs")))


def test_server_runs_the_schedule_only_when_configured(
    db_url: str, tmp_path: Path, sandbox_test
) -> None:
    def settings(in_server: bool) -> Settings:
        return Settings(
            home=tmp_path,
            database_url=db_url,
            models=ModelsConfig(student=str(sandbox_test.student_dir)),
            serving=ServingConfig(registry_poll_seconds=3600, retrieval=False),
            schedule=ScheduleConfig(cron="30 3 * * *", in_server=in_server),
        )

    plain = create_app(settings(False))
    with serve_in_thread(plain):
        assert plain.state.scheduler is None
    assert "apscheduler_jobs" not in inspect(open_database(db_url)).get_table_names()

    app = create_app(settings(True))
    with serve_in_thread(app):
        scheduler = app.state.scheduler
        assert scheduler.running
        [(job_id, next_run)] = _jobs(db_url)
        assert job_id == JOB_ID and next_run is not None  # stored, and scheduled (not paused)
        assert scheduler.get_job(JOB_ID).next_run_time.strftime("%H:%M") == "03:30"
    assert not scheduler.running  # the server's shutdown stopped it
    assert [job_id for job_id, _ in _jobs(db_url)] == [JOB_ID]  # the job stays stored
