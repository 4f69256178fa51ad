"""A test hook: make this process stop at a named point so a test can SIGKILL it there.

    PROTEGE_TEST_PAUSE_AT=after_vectors PROTEGE_TEST_PAUSE_MARKER=/tmp/m python child.py

At `pause_point("after_vectors")` the process writes the point's name to the marker file and
sleeps for an hour; the test waits for the marker, kills the process and checks the aftermath
(tests/test_knowledge_crash.py). Unset (always, outside tests), a pause point costs one dict lookup.

With `PROTEGE_TEST_RESUME_FILE=/tmp/go` as well, the process waits only until that file exists and
then goes on (tests/test_lease.py holds a cycle's lease that way while another process races it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

PAUSE_ENV = "PROTEGE_TEST_PAUSE_AT"
MARKER_ENV = "PROTEGE_TEST_PAUSE_MARKER"
RESUME_ENV = "PROTEGE_TEST_RESUME_FILE"


def pause_point(name: str) -> None:
    if os.environ.get(PAUSE_ENV) != name:
        return
    if marker := os.environ.get(MARKER_ENV):
        Path(marker).write_text(name)
    if resume := os.environ.get(RESUME_ENV):
        deadline = time.monotonic() + 3600
        while not Path(resume).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        return
    time.sleep(3600)


CRASH_ENV = "PROTEGE_TEST_CRASH_AT"


def crash_point(name: str) -> None:
    """`PROTEGE_TEST_CRASH_AT=<name>`: the process exits here at once, as a crashed one would
    (tests/test_data_parallel.py kills one training rank this way)."""
    if os.environ.get(CRASH_ENV) == name:
        os._exit(17)
