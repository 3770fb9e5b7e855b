"""Undo journalled before the process exists: `end_marked` finds it by the mark it was
started under, so a runner killed between a spawn and the journal of its pid leaves
nothing running (the gap the crash campaign found for the GPU hog and locust)."""

from __future__ import annotations

import os
import sys
import uuid
import subprocess
from pathlib import Path

from inferchaos.faults.ledger import UndoStep
from inferchaos.faults.undo import run_step
from inferchaos.load.runner import MARK_ENV as LOAD_MARK_ENV
from inferchaos.load.runner import LoadProfile, LoadRunner
from tests.support.waiting import wait_for
from inferchaos.targets.local.processes import MARK_ENV, group_alive, marked, spawn


def test_a_process_started_under_a_mark_is_found_and_ended(tmp_path: Path):
    mark = f"test-{uuid.uuid4().hex}"
    proc = spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "sleep.log",
                 {**os.environ, MARK_ENV: mark})
    try:
        wait_for(lambda: marked(mark) == [proc.pid], 10, "the marked process found")
        assert marked(f"test-{uuid.uuid4().hex}") == [], "another mark names nothing"
        assert run_step(UndoStep("end_marked", {"mark": mark, "what": "sleeper"})) == \
            "sleeper: ended 1 process group(s)"
        proc.wait(10)
        assert not group_alive(proc.pid)
        assert run_step(UndoStep("end_marked", {"mark": mark, "what": "sleeper"})) == "sleeper: none running"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_locust_carries_its_mark_from_the_start(tmp_path: Path):
    assert LOAD_MARK_ENV == MARK_ENV
    runner = LoadRunner("http://127.0.0.1:9", tmp_path / "requests.jsonl", LoadProfile(users=1, spawn_rate=1))
    assert runner.environment()[MARK_ENV] == runner.mark
    assert runner.mark != LoadRunner("http://127.0.0.1:9", tmp_path / "r2.jsonl", LoadProfile(users=1)).mark



OWNER = """
import sys, time
import subprocess
from pathlib import Path
from inferchaos.load.runner import LoadProfile, LoadRunner
runner = LoadRunner("http://127.0.0.1:9", Path(sys.argv[1]), LoadProfile(users=2, spawn_rate=10))
runner.start()
print(runner.pgid, flush=True)
time.sleep(600)
"""


def test_locust_stops_itself_when_its_runner_is_killed(tmp_path: Path):
    """The dead man's switch: a runner SIGKILLed with nobody to run `inferchaos recover`
    must not leave load running for ever (it once ran 90 minutes against a dead port)."""
    import signal

    owner = subprocess.Popen([sys.executable, "-c", OWNER, str(tmp_path / "requests.jsonl")], stdout=subprocess.PIPE,
                             text=True, cwd=Path(__file__).resolve().parents[2], start_new_session=True)
    try:
        pgid = int(owner.stdout.readline())  # type: ignore[union-attr]
        assert group_alive(pgid)
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait(10)
        wait_for(lambda: not group_alive(pgid), 20, "locust to notice its runner is gone and stop")
    finally:
        if owner.poll() is None:
            owner.kill()
