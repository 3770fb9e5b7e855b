"""The real spot-reclamation experiment, end to end, through pytest in a subprocess.

One detached local cluster for the module; each run is a separate `pytest -p inferchaos.plugin`
process pointed at it with `--state-dir`, with its own ledger and report directory, and short
phases (baseline 2 s, hold 4 s, recovery window 4 s: enough for the notice, the kill, the
3-s provisioning delay the experiment asks for and the replacement's cold start). Covered:
a healthy pass and `summary.json`'s shape; an SLO breached on purpose; a safeguard abort;
bad input refused before anything is injected; a ledger left open by a dead runner; and
SIGTERM to the runner mid-fault.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inferchaos.faults.ledger import Ledger
from inferchaos.reports.plot import FAULT_RGB
from tests.support.browser import dump_dom, screenshot
from tests.support.reportcheck import assert_experiment_reported, labels
from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.waiting import wait_for
from inferchaos.targets.local.control import read_desired
from inferchaos.targets.local.processes import group_alive
from tests.support.leftovers import module_cluster, processes_mentioning
from tests.support.phases import slo_set
from tests.support.inner import PYTEST

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
EXPERIMENT = "experiments/test_spot_reclamation.py"
BASELINE_S, HOLD_S, RECOVERY_S = 2, 4, 4
SHORT = slo_set(baseline_s=BASELINE_S, hold_s=HOLD_S, recovery_window_s=RECOVERY_S)
PHASES = ["baseline", "inject", "hold", "revert", "recovery"]


# ----------------------------------------------------------------------------- helpers
def wait_all_ready(cluster: LocalCluster, n: int = 3, timeout_s: float = 60) -> None:
    def ok() -> bool:
        active = cluster.replicas()
        lb = {s.name: s for s in cluster.lb_servers()}
        return len(active) == n and all(r.phase == "ready" and lb.get(f"r{r.slot}") and lb[f"r{r.slot}"].up
                                        for r in active)
    wait_for(ok, timeout_s, f"{n} replicas ready and up in the LB")


def replica_ids(cluster: LocalCluster) -> set[tuple[str, int]]:
    return {(r.name, r.pid) for r in cluster.replicas()}


def locusts_for(cluster: LocalCluster) -> list[str]:
    """Load generators aimed at this cluster (the runner passes `--host <LB url>`)."""
    return [p for p in processes_mentioning(f"--host {cluster.lb_url}") if "locust" in p]


def chaos_argv(cluster: LocalCluster, ledger: Path, report: Path, *extra: str, state_dir: bool = True) -> list[str]:
    argv = [*PYTEST, EXPERIMENT, "--ledger", str(ledger), "--chaos-report", str(report)]
    if state_dir:
        argv += ["--state-dir", str(cluster.state_dir)]
    return argv + list(extra)


def inner_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_chaos(cluster: LocalCluster, tmp: Path, *extra: str, state_dir: bool = True,
              timeout: float = 120) -> tuple[subprocess.CompletedProcess, str]:
    proc = subprocess.run(chaos_argv(cluster, tmp / "ledger.jsonl", tmp / "report", *extra, state_dir=state_dir),
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=inner_env())
    return proc, proc.stdout + proc.stderr


def read_summary(tmp: Path) -> dict:
    path = tmp / "report" / "summary.json"
    assert path.is_file(), f"no {path}"
    return json.loads(path.read_text())


def recover(ledger: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferchaos.cli", "recover", "--ledger", str(ledger), *extra],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def assert_restored(cluster: LocalCluster, ledger: Path) -> None:
    """Nothing of the run is left applied: ledger closed, runtime settings back, all replicas serving."""
    assert Ledger(ledger).open_entries() == []
    assert read_desired(cluster.state_dir) == {}
    assert locusts_for(cluster) == []
    wait_all_ready(cluster)


def phase(summary_experiment: dict, name: str) -> dict:
    (p,) = [p for p in summary_experiment["phases"] if p["name"] == name]
    return p


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    yield from module_cluster(tmp_path_factory, "experiment-run", ClusterSpec(replicas=3, provisioning_delay_s=1.0))


@pytest.fixture
def ready(cluster: LocalCluster) -> LocalCluster:
    """The cluster with every replica back and serving (a previous run's replacement included)."""
    wait_all_ready(cluster)
    return cluster


@pytest.fixture
def run_dir(tmp_path: Path):
    """A run's ledger and report directory; whatever a failing test left applied is undone."""
    yield tmp_path
    ledger = tmp_path / "ledger.jsonl"
    if Ledger(ledger).open_entries():
        recover(ledger, "--force")


@pytest.fixture(scope="module")
def healthy(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory):
    """One healthy run with the short phases, shared by the tests that read it."""
    wait_all_ready(cluster)
    tmp = tmp_path_factory.mktemp("healthy")
    os.environ["INFERCHAOS_MODULES_SEEN"] = str(tmp / "modules_seen.json")
    try:
        proc, out = run_chaos(cluster, tmp, *SHORT, "--alluredir", str(tmp / "allure"), "--junitxml",
                              str(tmp / "junit.xml"), "-p", "tests.support.modules_seen")
    finally:
        del os.environ["INFERCHAOS_MODULES_SEEN"]
    return proc, out, tmp


# ----------------------------------------------------------------------------- healthy
def test_healthy_run_passes_and_writes_the_documented_summary(cluster, healthy):
    proc, out, tmp = healthy
    assert proc.returncode == 0, out
    assert re.search(r"PASS\s+spot_reclamation", out), out

    summary = read_summary(tmp)
    assert summary["target"] == "local"
    (e,) = summary["experiments"]
    assert {"id", "fault", "verdict", "slos", "requests", "fault_window"} <= set(e)
    assert e["id"] == "spot_reclamation" and e["fault"] == "spot_reclamation"
    assert e["verdict"] == "pass", e
    assert e["aborted"] is None and e["error"] is None
    assert set(e["queue_time"]) == {"requests", "p99_ms", "mean_ms", "replicas"}
    assert e["queue_time"]["requests"] > 0
    assert any(c["outcome"] == "ready" for c in e["cold_starts"]), "the replacement's cold start is listed"

    assert {s["name"] for s in e["slos"]} == {"availability", "p99_ms", "recovery_s", "failover_s", "freshness_s",
                                             "golden_pass_rate", "prediction_psi", "gpu_xid_errors",
                                             "schedule_lag_p99_ms", "stream_integrity", "incomplete_rate"}
    for s in e["slos"]:
        assert {"name", "objective", "observed", "ok"} <= set(s)
        assert isinstance(s["objective"], str) and s["objective"].startswith((">=", "<="))
        assert s["ok"] is True, s
        if s["name"] != "gpu_xid_errors":
            assert isinstance(s["observed"], (int, float)), s
    # Model health measured; the GPU probe says why it measured nothing on a machine without one.
    assert e["model_health"]["golden"]["checked"] > 10 and e["model_health"]["golden"]["wrong"] == 0
    # A short healthy run samples few answers, so its PSI carries sampling noise: the verdict's own bound
    # (prediction_psi <= 0.25, the "significant" band's edge) is what a healthy run must meet, not "stable".
    assert e["model_health"]["drift"]["measured"] and e["model_health"]["drift"]["band"] in {"stable", "moderate"}
    (xid,) = [s for s in e["slos"] if s["name"] == "gpu_xid_errors"]
    if not e["gpu"]["measured"]:
        assert xid["observed"] is None and xid["detail"].startswith("not measured (optional): NVML"), xid
        assert e["gpu"]["reason"].startswith("not measured: NVML")

    assert isinstance(e["requests"], int) and e["requests"] > 0
    log = Path(e["request_log"])
    assert log.is_file() and len(log.read_text().splitlines()) == e["requests"]

    w = e["fault_window"]
    assert 0 < w["inject_s"] < w["revert_s"]
    assert w["inject_wall"] < w["revert_wall"]
    # (times are rounded to the millisecond: allow for it)
    assert w["revert_s"] - w["inject_s"] >= HOLD_S - 0.002
    assert [p["name"] for p in e["phases"]] == PHASES
    assert phase(e, "baseline")["end_s"] - phase(e, "baseline")["start_s"] >= BASELINE_S - 0.002
    assert phase(e, "recovery")["end_s"] - phase(e, "recovery")["start_s"] >= RECOVERY_S - 0.002

    # One replica reclaimed; the LB stopped routing to it; its replacement was back and serving
    # before the run ended (the short phases are long enough for that).
    (f,) = e["failover"]
    assert f["failover_s"] is not None and f["failover_s"] <= 8
    assert f["replacement"] is not None and f["replacement_traffic_s"] is not None, f

    assert_restored(cluster, tmp / "ledger.jsonl")


def test_a_whole_run_imports_no_layer_by_its_top_level_name(healthy):
    """The checkout is on the run's sys.path (pytest runs from it), so `import load` would work
    and give a second copy of every module in it; the run must use only `inferchaos.*`."""
    proc, out, tmp = healthy
    assert proc.returncode == 0, out
    seen = json.loads((tmp / "modules_seen.json").read_text())
    assert seen == [], seen


def test_summary_failover_times_are_on_the_run_clock(healthy):
    """Every time in summary.json is seconds from the run's start (ejected_at used to stay raw monotonic)."""
    _, _, tmp = healthy
    (e,) = read_summary(tmp)["experiments"]
    (f,) = e["failover"]
    end = phase(e, "recovery")["end_s"]
    assert 0 <= f["died_at"] <= end
    assert f["ejected_at"] is not None and 0 <= f["ejected_at"] <= end, f


def test_progress_lines_are_shown_while_the_experiment_runs(healthy):
    """The plan and the 2-s progress lines reach the terminal in a plain run (no -s), not the capture."""
    proc, out, _ = healthy
    assert proc.returncode == 0, out
    assert "inferchaos: spot_reclamation: plan: " in out
    assert re.search(r"inferchaos: spot_reclamation: hold +\d+\.\ds left +[\d.]+ req/s +errors \d+ +p99 [\d-]"
                     r".* replicas ready \d/3", out), out
    assert "\x1b[K" not in out, "not a terminal: plain lines, no in-place refresh"


# ----------------------------------------------------------------------------- reports
def test_allure_results_hold_phases_labels_and_attachments(healthy):
    """Every phase a step, the SLOs under the verdict, the five attachments; the PNG's fault
    band sits where the ledger says the fault was injected and reverted."""
    proc, out, tmp = healthy
    assert proc.returncode == 0, out
    (e,) = read_summary(tmp)["experiments"]
    result = assert_experiment_reported(tmp / "allure", e, tmp / "ledger.jsonl")
    assert result["status"] == "passed"
    tags = labels(result)
    assert tags["severity"] == ["critical"] and tags["owner"] == ["ml-platform"] and tags["model"] == ["mlp"], tags
    props = dict(line.split("=", 1) for line in (tmp / "allure" / "environment.properties").read_text().splitlines())
    assert props["target"] == "local" and props["cluster.replicas"] == "3" and props["cluster.model"] == "mlp"
    assert props["locust"] and props["haproxy"].startswith("HAProxy version") and "python" in props
    assert re.fullmatch(r"[0-9a-f]{40}", props.get("git.commit", "0" * 40))


def test_summary_html_renders_in_headless_chromium(healthy, tmp_path):
    """The self-contained page shows the verdict table and the timeline image, with nothing
    beside it: the screenshot holds the plot's fault band, so the inlined PNG was drawn."""
    proc, out, tmp = healthy
    page = tmp / "report" / "summary.html"
    assert page.is_file(), out
    alone = tmp_path / "alone" / "summary.html"  # away from the run's files: nothing else to load
    alone.parent.mkdir()
    alone.write_bytes(page.read_bytes())
    dom = dump_dom(alone, tmp_path / "profile")
    assert re.search(r"<td class=\"?pass\"?>PASS</td>", dom), dom[:2000]
    assert 'id="verdicts"' in dom or "id=verdicts" in dom
    shot = screenshot(alone, REPO / ".inferchaos" / "test-artifacts" / "summary-html.png", tmp_path / "profile")
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=int)
    band = int((np.abs(pixels - np.array(FAULT_RGB)) <= 6).all(axis=2).sum())
    assert band > 500, f"no fault band in the screenshot {shot} ({band} pixels)"


def test_junit_xml_carries_the_verdict_for_ci(healthy):
    proc, out, tmp = healthy
    xml = (tmp / "junit.xml").read_text()
    assert 'tests="1"' in xml and 'failures="0"' in xml and "test_spot_reclamation" in xml


# ----------------------------------------------------------------------------- SLO breached
def test_breached_slo_fails_the_run_by_name_and_restores_everything(ready, run_dir):
    proc, out = run_chaos(ready, run_dir, *SHORT, "--slo-set", "p99_ms=0.001", "--junitxml",
                          str(run_dir / "junit.xml"))
    assert proc.returncode == 1, out
    failure = re.search(r'<failure message="([^"]*)"', (run_dir / "junit.xml").read_text())
    assert failure and "SLO breached: p99_ms &lt;= 0.001 ms (observed" in failure.group(1), "the CI gate names the SLO"
    assert re.search(r"BREACHED\s+p99_ms <= 0\.001 ms", out), out
    assert re.search(r"spot_reclamation: SLO breached: .*p99_ms <= 0\.001 ms \(observed", out), out

    (e,) = read_summary(run_dir)["experiments"]
    assert e["verdict"] == "fail"
    (p99,) = [s for s in e["slos"] if s["name"] == "p99_ms"]
    assert p99["ok"] is False and p99["observed"] > 0.001 and p99["objective"] == "<= 0.001 ms"
    (availability,) = [s for s in e["slos"] if s["name"] == "availability"]
    assert availability["ok"] is True  # only what was breached is named as breached

    assert_restored(ready, run_dir / "ledger.jsonl")


def test_a_load_generator_that_cannot_keep_its_schedule_fails_the_run_by_name(ready, run_dir):
    """One request in flight at most, 100 due a second, ~50 ms each: the schedule slips and
    the run says so (schedule_lag_p99_ms), whatever the cluster did."""
    proc, out = run_chaos(ready, run_dir, *SHORT, "--load-rate", "100", "--load-max-in-flight", "1")
    assert proc.returncode == 1, out
    (e,) = read_summary(run_dir)["experiments"]
    (lag,) = [s for s in e["slos"] if s["name"] == "schedule_lag_p99_ms"]
    assert lag["ok"] is False and lag["observed"] > 100, lag
    assert e["load"]["mode"] == "open" and "100 req/s" in e["load"]["describe"]
    assert_restored(ready, run_dir / "ledger.jsonl")


def test_closed_loop_load_runs_and_says_so(ready, run_dir):
    proc, out = run_chaos(ready, run_dir, *SHORT, "--load-users", "4")
    assert proc.returncode == 0, out
    (e,) = read_summary(run_dir)["experiments"]
    assert e["load"]["mode"] == "closed" and e["load"]["describe"] == "closed loop, 4 users"
    (lag,) = [s for s in e["slos"] if s["name"] == "schedule_lag_p99_ms"]
    assert lag["ok"] and lag["observed"] is None and "closed-loop load has no schedule" in lag["detail"]
    assert "closed loop, 4 users" in out


# ----------------------------------------------------------------------------- safeguard
def test_safeguard_aborts_the_fault_early_and_reverts_it(ready, run_dir):
    proc, out = run_chaos(ready, run_dir, *SHORT, "--slo-set", "safeguard.max_p99_ms=1")
    assert proc.returncode != 0, out
    assert "aborted" in out.lower(), out
    assert re.search(r"ABORTED\s+spot_reclamation", out), out

    (e,) = read_summary(run_dir)["experiments"]
    assert e["verdict"] == "aborted", e
    assert e["aborted"] and "p99" in e["aborted"] and "1 ms" in e["aborted"]

    # Reverted early: well before baseline + hold would have ended.
    inject, revert = phase(e, "inject"), phase(e, "revert")
    assert revert["start_s"] < inject["start_s"] + HOLD_S / 2, e["phases"]
    assert e["fault_window"]["revert_s"] < inject["start_s"] + HOLD_S / 2

    ledger = Ledger(run_dir / "ledger.jsonl")
    entries = list(ledger.entries())
    spot_ids = {x.id for x in entries if x.fault == "spot_reclamation" and x.event == "applied"}
    assert len(spot_ids) == 1
    assert any(x.event == "reverted" and x.id in spot_ids for x in entries)
    assert_restored(ready, run_dir / "ledger.jsonl")


# ----------------------------------------------------------------------------- bad input
MISSING = object()
BAD_INPUT = {
    "slo file: unknown key": ("[defaults.slo]\np99_ms = 2000\nlatency_ms = 5\n", [], ["latency_ms"]),
    "slo file: wrong type": ('[defaults.slo]\np99_ms = "fast"\n', [], ["p99_ms", "fast"]),
    "slo file: unparsable TOML": ("[defaults.slo\np99_ms = 2000\n", [], ["invalid TOML"]),
    "slo file: missing": (MISSING, [], ["no-such-slo.toml"]),
    "--slo-set not a number": (None, ["--slo-set", "p99_ms=abc"], ["p99_ms", "abc"]),
    "--slo-set unknown key": (None, ["--slo-set", "nosuchkey=1"], ["nosuchkey"]),
    "--slo-set availability > 1": (None, ["--slo-set", "availability=1.5"], ["availability", "1.5"]),
    "--slo-set negative hold": (None, ["--slo-set", "hold_s=-1"], ["hold_s", "-1"]),
    "--target kubernetes": (None, ["--target", "kubernetes"], ["kubernetes"]),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2_and_nothing_injected(ready, run_dir, case):
    slo_text, extra, words = BAD_INPUT[case]
    args = list(extra) + SHORT
    if slo_text is not None:
        slo = run_dir / ("no-such-slo.toml" if slo_text is MISSING else "slo.toml")
        if slo_text is not MISSING:
            slo.write_text(slo_text)
        args += ["--slo", str(slo)]
    before = replica_ids(ready)

    # --state-dir is for --target local only: asking for kubernetes goes without it.
    proc, out = run_chaos(ready, run_dir, *args, state_dir=case != "--target kubernetes", timeout=60)

    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if "inferchaos: error:" in line]
    assert len(lines) == 1, out
    assert "Exit: inferchaos: error: " in lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    # nothing injected: no ledger written, no replica touched, no load started, no report
    assert not (run_dir / "ledger.jsonl").exists()
    assert replica_ids(ready) == before
    assert locusts_for(ready) == []
    assert not (run_dir / "report" / "summary.json").exists()
    assert read_desired(ready.state_dir) == {}


# ----------------------------------------------------------------------------- open ledger
def test_an_unreverted_ledger_entry_blocks_injection_until_recovered(ready, run_dir):
    ledger_path = run_dir / "ledger.jsonl"
    # A runner that died with its fault applied (its own process, gone by now).
    subprocess.run([sys.executable, "-c", "import sys; from inferchaos.faults.ledger import Ledger; "
                    "Ledger(sys.argv[1]).applied('spot_reclamation', [], {'kind': 'local'})", str(ledger_path)],
                   check=True, cwd=REPO, timeout=30)
    ledger = Ledger(ledger_path)
    (left,) = ledger.open_entries()
    written = ledger_path.read_bytes()
    before = replica_ids(ready)

    proc, out = run_chaos(ready, run_dir, *SHORT, timeout=60)
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if "inferchaos: error:" in line]
    assert len(lines) == 1, out
    assert "unreverted" in lines[0] and "spot_reclamation" in lines[0] and left.id in lines[0]
    assert f"inferchaos recover --ledger {ledger_path}" in lines[0]
    # nothing injected, nothing journalled
    assert ledger_path.read_bytes() == written
    assert replica_ids(ready) == before
    assert locusts_for(ready) == []
    assert read_desired(ready.state_dir) == {}

    rec = recover(ledger_path)
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert f"spot_reclamation {left.id}: reverted" in rec.stdout
    assert ledger.open_entries() == []

    proc, out = run_chaos(ready, run_dir, *SHORT)
    assert proc.returncode == 0, out
    (e,) = read_summary(run_dir)["experiments"]
    assert e["verdict"] == "pass"
    assert_restored(ready, ledger_path)


# ----------------------------------------------------------------------------- SIGTERM
def test_sigterm_mid_fault_reverts_fault_and_load_without_recover(ready, run_dir):
    ledger_path = run_dir / "ledger.jsonl"
    ledger = Ledger(ledger_path)
    stdout = run_dir / "runner.out"
    with open(stdout, "wb") as fh:
        runner = subprocess.Popen(
            chaos_argv(ready, ledger_path, run_dir / "report", "-s", "--slo-set", f"baseline_s={BASELINE_S}",
                       "--slo-set", "hold_s=120", "--slo-set", f"recovery_window_s={RECOVERY_S}"),
            cwd=REPO, env=inner_env(), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def injected() -> bool:
            spot = [e for e in ledger.open_entries() if e.fault == "spot_reclamation"]
            return bool(spot) and any(u.op == "end_group" for u in spot[0].undo)

        wait_for(injected, 60, "the spot reclamation injected")
        wait_for(lambda: "spot_reclamation: hold" in stdout.read_text(errors="replace"), 30, "the hold phase")
        (load,) = [e for e in ledger.open_entries() if e.fault == "load"]
        (locust_group,) = [u.args["pgid"] for u in load.undo if u.op == "end_group"]
        assert group_alive(locust_group)
        assert read_desired(ready.state_dir) == {"provisioning_delay_s": 3.0}

        os.kill(runner.pid, signal.SIGTERM)
        runner.wait(timeout=30)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
    out = stdout.read_text(errors="replace")
    assert runner.returncode != 0, out

    # The runner itself undid the fault and the load: every entry closed by its own pid.
    assert ledger.open_entries() == [], out
    closed = {e.fault for e in ledger.entries() if e.event == "reverted" and e.runner_pid == runner.pid}
    assert {"spot_reclamation", "load"} <= closed
    assert not any(e.detail == "recovered" for e in ledger.entries())
    assert not group_alive(locust_group), "the load generator of the interrupted run must be gone"
    assert read_desired(ready.state_dir) == {}
    assert_restored(ready, ledger_path)


# ----------------------------------------------------------------------------- verdicts you can trust
def test_a_broken_baseline_is_inconclusive_and_injects_nothing(ready, run_dir):
    """Every baseline request refused by the server (a payload of the wrong shape): the
    steady state does not hold, nothing is injected, and the run says why everywhere a
    gate or a person looks."""
    payload = run_dir / "wrong-shape.jsonl"
    payload.write_text('{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}\n')
    proc, out = run_chaos(ready, run_dir, *SHORT, "--payload", str(payload), "--junitxml", str(run_dir / "junit.xml"))
    assert proc.returncode == 1, out
    (e,) = read_summary(run_dir)["experiments"]
    assert e["verdict"] == "inconclusive", e["verdict"]
    why = e["inconclusive"]
    assert why.startswith("steady state not met, nothing injected: baseline: 100% of ") and "requests failed" in why
    assert "HTTP 4" in why and "availability >= 0.99" in why, why
    assert [p["name"] for p in e["phases"]] == ["baseline"] and e["slos"] == []
    assert [s["name"] for s in e["steady_state"] if not s["ok"]][:1] == ["availability"]
    assert "inconclusive: steady state not met" in (run_dir / "junit.xml").read_text()
    assert re.search(r"INCONCLUSIVE\s+spot_reclamation", out), out
    assert "INCONCLUSIVE" in (run_dir / "report" / "summary.html").read_text()
    entries = list(Ledger(run_dir / "ledger.jsonl").entries())
    spot = [x for x in entries if x.fault == "spot_reclamation"]
    assert not any(x.detail == "injected" for x in spot), "no injection in the ledger"
    assert all(x.undo == () for x in spot), "nothing was changed that needed undoing"
    assert_restored(ready, run_dir / "ledger.jsonl")


def test_the_safeguard_sees_a_hang_through_the_requests_still_out(ready, run_dir):
    """Behind HAProxy's defaults a third of the arrivals wait on the hung replica; none of
    them is answered, so only their age shows it. max_p99_ms 1000 must abort within
    window_s + 1 s of the hang, and the hang is reverted."""
    argv = chaos_argv(ready, run_dir / "ledger.jsonl", run_dir / "report", *SHORT,
                      "--slo-set", "safeguard.max_p99_ms=1000", "-k", "plain")
    argv[argv.index(EXPERIMENT)] = "experiments/test_replica_hang.py"
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO, env=inner_env())
    out = proc.stdout + proc.stderr
    (e,) = read_summary(run_dir)["experiments"]
    assert e["verdict"] == "aborted", out[-3000:]
    assert "safeguard: p99" in e["aborted"] and "still out longer than that" in e["aborted"], e["aborted"]
    inject, revert = phase(e, "inject"), phase(e, "revert")
    window_s = 3.0
    assert revert["start_s"] - inject["start_s"] <= window_s + 1.0, e["phases"]
    assert_restored(ready, run_dir / "ledger.jsonl")
