"""The pytest wiring: options, fixtures and markers for chaos experiments.

`conftest.py` only loads this plugin. Options are validated once at start-up (a bad SLO
file or `--slo-set` is one line and exit code 2, before anything runs); the session
refuses to inject while the ledger shows an unreverted change; SIGTERM becomes
KeyboardInterrupt so every `finally` (fault revert, load stop, cluster stop) runs.
"""

from __future__ import annotations

import json
import os
import re
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from faults.base import Fault
from faults.ledger import DEFAULT_LEDGER, Ledger
from faults.undo import step
from inferchaos.engine import Experiment, ExperimentResult
from inferchaos.errors import InferchaosError, UsageError
from probes.slo import default_slo_path, load_slo
from targets.local import ClusterSpec, LocalCluster

FAULT_MARKERS = {
    "spot_reclamation": "spot instance reclaimed mid-inference (notice, then kill)",
    "gpu_oom": "device memory exhausted on a replica",
    "model_load_stall": "model store slow or stalled while replicas load",
    "pipeline_lag": "feature pipeline stopped or feature reads slow",
    "dependency_latency": "latency, jitter or resets toward a dependency",
    "replica_crash": "a replica SIGKILLed",
    "replica_hang": "a replica SIGSTOPped (socket open, no answers)",
    "traffic_surge": "load jumps N-fold for the fault window",
}
TARGETS = ("local", "kubernetes")


@dataclass
class ChaosSession:
    target_name: str
    slo_path: Path
    overrides: list[str]
    ledger: Ledger
    report_dir: Path
    summary: bool
    state_dir: Path | None
    results: list[ExperimentResult] = field(default_factory=list)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("inferchaos", "chaos experiments")
    g.addoption("--target", choices=TARGETS, default="local", help="where faults land (default: local)")
    g.addoption("--slo", metavar="FILE", default=None, help="SLO file (default: experiments/slo.toml)")
    g.addoption("--slo-set", metavar="KEY=VALUE", action="append", default=[],
                help="override an SLO or phase key for every experiment (repeatable)")
    g.addoption("--chaos-report", metavar="DIR", default=None, help="write DIR/summary.json and per-run artefacts")
    g.addoption("--ledger", metavar="PATH", default=str(DEFAULT_LEDGER), help="fault ledger (default: %(default)s)")
    g.addoption("--state-dir", metavar="DIR", default=None,
                help="run against a local cluster already started with `inferchaos up --detach`")


def pytest_configure(config: pytest.Config) -> None:
    for name, text in FAULT_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    try:
        session = _chaos_session(config)
    except UsageError as exc:
        pytest.exit(f"inferchaos: error: {exc}", returncode=2)
    config.stash[SESSION] = session
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


SESSION = pytest.StashKey[ChaosSession]()


def _chaos_session(config: pytest.Config) -> ChaosSession:
    target = config.getoption("--target")
    slo_path = Path(config.getoption("--slo") or default_slo_path())
    overrides = list(config.getoption("--slo-set"))
    load_slo(slo_path, "spot_reclamation", overrides)  # validates the file and every override now
    report = config.getoption("--chaos-report")
    state_dir = config.getoption("--state-dir")
    if state_dir and target != "local":
        raise UsageError("--state-dir applies to --target local only")
    return ChaosSession(
        target_name=target, slo_path=slo_path, overrides=overrides, ledger=Ledger(config.getoption("--ledger")),
        report_dir=Path(report) if report else Path(".inferchaos/runs"), summary=bool(report),
        state_dir=Path(state_dir) if state_dir else None,
    )


def pytest_sessionfinish(session: pytest.Session) -> None:
    chaos = session.config.stash.get(SESSION, None)
    if chaos is None or not chaos.summary or not chaos.results:
        return
    chaos.report_dir.mkdir(parents=True, exist_ok=True)
    summary = {"target": chaos.target_name, "experiments": [r.to_summary() for r in chaos.results]}
    (chaos.report_dir / "summary.json").write_text(json.dumps(summary, indent=2))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    chaos = config.stash.get(SESSION, None)
    if not chaos or not chaos.results:
        return
    terminalreporter.section("chaos verdicts")
    for r in chaos.results:
        terminalreporter.write_line(f"{r.verdict.upper():8} {r.id}")
        for s in r.slos:
            mark = "ok " if s.ok else "BREACHED"
            terminalreporter.write_line(f"           {mark:9}{s.name} {s.objective}: {s.detail}")
    if chaos.summary:
        terminalreporter.write_line(f"summary: {chaos.report_dir / 'summary.json'}")


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def chaos(request: pytest.FixtureRequest) -> ChaosSession:
    session = request.config.stash[SESSION]
    if session.target_name != "local":
        pytest.exit("inferchaos: error: --target kubernetes is not available yet in this build", returncode=2)
    still_open = [e for e in session.ledger.open_entries() if e.fault != "cluster"]
    if still_open:
        names = ", ".join(f"{e.fault} ({e.id}, runner pid {e.runner_pid})" for e in still_open)
        pytest.exit(
            f"inferchaos: error: the ledger {session.ledger.path} shows unreverted changes: {names}; "
            f"run `inferchaos recover --ledger {session.ledger.path}` first", returncode=2)
    return session


@pytest.fixture(scope="session")
def target(chaos: ChaosSession, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """The cluster under test: one already running (--state-dir), or one started for the session."""
    say = _say(request.config)
    if chaos.state_dir is not None:
        cluster = LocalCluster.attach(chaos.state_dir)
        if not cluster.running():
            pytest.exit(f"inferchaos: error: no running cluster in {chaos.state_dir}", returncode=2)
        yield cluster
        return
    cluster = LocalCluster(ClusterSpec(replicas=3, provisioning_delay_s=2.0), owner_pid=os.getpid())
    entry = chaos.ledger.applied("cluster", [step("stop_cluster", state_dir=str(cluster.state_dir))],
                                 {"kind": "local", "state_dir": str(cluster.state_dir)})
    try:
        say(f"starting the local cluster in {cluster.state_dir}")
        try:
            cluster.start(progress=say)
        except InferchaosError as exc:
            pytest.exit(f"inferchaos: error: {exc}", returncode=2)
        yield cluster
    finally:
        cluster.stop()
        chaos.ledger.reverted(entry)


@pytest.fixture
def run_experiment(chaos: ChaosSession, target: LocalCluster,
                   request: pytest.FixtureRequest) -> Callable[[Fault], ExperimentResult]:
    """Run one fault under load through all phases; returns the result with SLO verdicts."""

    def run(fault: Fault) -> ExperimentResult:
        experiment_id = re.sub(r"^test_", "", request.node.name)
        fault.ledger, fault.experiment = chaos.ledger, experiment_id
        slo = load_slo(chaos.slo_path, fault.name, chaos.overrides)
        out = chaos.report_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment_id)
        result = Experiment(experiment_id, target, fault, slo, out, chaos.ledger, _say(request.config)).run()
        chaos.results.append(result)
        return result

    return run


def _say(config: pytest.Config) -> Callable[[str], None]:
    """Progress lines shown while the test runs: pytest captures the test's output, so
    write with capture suspended, as pytest's own live logging does."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")

    def say(line: str) -> None:
        if reporter is None:
            return
        if capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line(f"  inferchaos: {line}")
                reporter._tw.flush()
        else:
            reporter.write_line(f"  inferchaos: {line}")

    return say
