"""The fixtures an experiment uses: `target` (the cluster under test), `run_experiment`
(one fault under load through all phases, judged), and what they stand on."""

from __future__ import annotations

import os
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from inferchaos.faults.base import Fault
from inferchaos.faults.undo import step
from inferchaos.engine import Experiment, ExperimentResult
from inferchaos.annotations import Annotations
from inferchaos.load.workload import Workload, resolve
from inferchaos.costing import experiment_cost
from inferchaos.ground.errors import InferchaosError, UsageError
from inferchaos.probes.slo import load_slo
from inferchaos.reports import allure_results, write_run
from inferchaos.targets.base import Target
from inferchaos.targets.inventory import inventory_of
from inferchaos.targets.local import ClusterSpec, LocalCluster
from inferchaos.targets.local.prometheus import write_targets
from inferchaos.plugin.session import RUNBOOK_BASE_ENV, SESSION, ChaosSession, _chaos_meta, _progress

#: how long replicas started by `--replica-cmd` may take to be ready.
REPLICA_CMD_STARTUP_S = 180.0


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def chaos(request: pytest.FixtureRequest) -> ChaosSession:
    session = request.config.stash[SESSION]
    still_open = [e for e in session.ledger.open_entries() if e.fault != "cluster"]
    if still_open:
        names = ", ".join(f"{e.fault} ({e.id}, runner pid {e.runner_pid})" for e in still_open)
        pytest.exit(
            f"inferchaos: error: the ledger {session.ledger.path} shows unreverted changes: {names}; "
            f"run `inferchaos recover --ledger {session.ledger.path}` first", returncode=2)
    return session


@pytest.fixture(scope="session")
def target(chaos: ChaosSession, request: pytest.FixtureRequest) -> Iterator[Target]:
    """The cluster under test: a Kubernetes namespace, a local cluster already running
    (--state-dir), or one started for the session."""
    say = _progress(request.config).say
    if chaos.kube is not None:
        try:
            from inferchaos.targets.kubernetes import KubeTarget
            kube = KubeTarget(chaos.kube).start()
            try:
                kube.tie()
            except Exception:
                kube.close()
                raise
        except InferchaosError as exc:
            pytest.exit(f"inferchaos: error: {exc}", returncode=2)
        chaos.cluster = {"kind": "kubernetes", "context": kube.connection.context, "namespace": kube.namespace,
                         "selector": kube.selector, "replicas": kube.desired_replicas(),
                         "model": chaos.kube.golden_model}
        say(f"target: {kube.describe()}, {len(kube.replicas())} pods; endpoint {kube.lb_url} (Service {kube.service})")
        try:
            yield kube
        finally:
            kube.close()
        return
    if chaos.state_dir is not None:
        cluster = LocalCluster.attach(chaos.state_dir)
        if not cluster.running():
            pytest.exit(f"inferchaos: error: no running cluster in {chaos.state_dir}", returncode=2)
        chaos.cluster = _cluster_info(cluster)
        yield cluster
        return
    # a real server loads a real model: vLLM's CPU build alone is ready in ~36 s here, three at
    # once on a cold cache took over 60 s (the reference server's default)
    custom = {"replica_cmd": chaos.load.replica_cmd, "startup_timeout_s": REPLICA_CMD_STARTUP_S} \
        if chaos.load.replica_cmd else {}
    if chaos.load.ready_path:
        custom["ready_path"] = chaos.load.ready_path
    try:
        spec = ClusterSpec(replicas=3, provisioning_delay_s=2.0, prometheus=shutil.which("prometheus") is not None,
                           **custom).validate()
    except UsageError as exc:
        pytest.exit(f"inferchaos: error: {exc}", returncode=2)
    cluster = LocalCluster(spec, owner_pid=os.getpid())
    chaos.cluster = _cluster_info(cluster)
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


def _inventory(chaos: ChaosSession, target: Target, say: Callable[[str], None]) -> None:
    """What this run tests, in its report: model, replicas, GPUs, owner, shadow AI."""
    try:
        chaos.inventory = [w.to_dict() for w in inventory_of(target)]
    except InferchaosError as exc:
        say(f"inventory not taken: {exc}")


@pytest.fixture(scope="session")
def annotations(chaos: ChaosSession, target: Target, request: pytest.FixtureRequest) -> Iterator[Annotations]:
    """The fault windows for dashboards: `inferchaos_fault_active` on the runner's /metrics
    (scraped by the local cluster's Prometheus when it has one) and Grafana annotations."""
    say = _progress(request.config).say
    _inventory(chaos, target, say)
    ann = Annotations(port=chaos.metrics_port, host=chaos.metrics_host, grafana_url=chaos.grafana_url, say=say)
    try:
        ann.start()
    except OSError as exc:
        pytest.exit(f"inferchaos: error: --metrics-port {chaos.metrics_port}: {exc.strerror or exc}", returncode=2)
    scrape = None
    if ann.bound_port is not None:
        say(f"fault windows as a metric: {ann.metrics_url}")
        if isinstance(target, LocalCluster) and target.prometheus_url:
            scrape = Path(target.state_dir) / "prometheus" / "targets" / f"runner-{os.getpid()}.json"
            write_targets(scrape, [{"targets": [f"127.0.0.1:{ann.bound_port}"], "labels": {"job": "inferchaos"}}])
            if not _scraped(target.prometheus_url, ann.bound_port, SCRAPE_WAIT_S):
                say(f"Prometheus has not scraped the runner's metrics after {SCRAPE_WAIT_S:g} s: the first "
                    "fault windows may be missing from it")
    try:
        yield ann
    finally:
        ann.stop()
        if scrape is not None:
            scrape.unlink(missing_ok=True)


#: Prometheus hands new file_sd targets to its scrapers at most every 5 s; then the first scrape.
SCRAPE_WAIT_S = 20.0


def _scraped(prometheus: str, port: int, within_s: float) -> bool:
    """The runner's /metrics scraped (health up) by Prometheus: before the first fault, so a
    dashboard, or a PromQL objective on inferchaos_fault_active, sees every window."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            active = httpx.get(f"{prometheus}/api/v1/targets", params={"state": "active"}, timeout=2).json()
            if any(t.get("health") == "up" and f":{port}/" in t.get("scrapeUrl", "")
                   for t in active["data"]["activeTargets"]):
                return True
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    return False


@pytest.fixture(scope="session")
def workload(chaos: ChaosSession, target: Target, request: pytest.FixtureRequest) -> Workload:
    """What the load sends, from the server's own metadata (or --payload): a model the
    server does not list, or an API it does not speak, stops the run before any fault."""
    if chaos.workload is None:
        o = chaos.load
        try:
            chaos.workload = resolve(target.lb_url, o.api, o.model, o.payload, o.headers)
        except UsageError as exc:
            pytest.exit(f"inferchaos: error: {exc}", returncode=2)
        _progress(request.config).say(f"workload: {chaos.workload.describe()}")
    return chaos.workload


@pytest.fixture
def run_experiment(chaos: ChaosSession, target: Target, annotations: Annotations, workload: Workload,
                   request: pytest.FixtureRequest) -> Callable[[Fault], ExperimentResult]:
    """Run one fault under load through all phases; returns the result with SLO verdicts."""

    def run(fault: Fault, via: Target | None = None) -> ExperimentResult:
        """`via`: the target as the load sees it, when not the session's own (the same
        local cluster behind another LB front, `LocalCluster.behind_plain_lb()`)."""
        experiment_id = re.sub(r"^test_", "", request.node.name)
        if chaos.fault_sets.get(fault.name):  # --fault-set wins over what the experiment gave
            fault = fault.spec.on(fault.target, **{**dict(fault.args), **chaos.fault_sets[fault.name]})
        fault.ledger, fault.experiment = chaos.ledger, experiment_id
        slo = load_slo(chaos.slo_path, fault.name, chaos.overrides)
        lines = fault.plan()  # a blast radius the target cannot satisfy stops here, before any change
        if chaos.dry_run:
            _progress(request.config).say(f"{experiment_id}: dry run, nothing changed: would " + "; ".join(lines))
            pytest.skip(f"dry run: {fault.name} would " + "; ".join(lines))
        out = chaos.report_dir / re.sub(r"[^A-Za-z0-9_.-]+", "_", experiment_id)
        meta = {}
        for mark in reversed(list(request.node.iter_markers("chaos"))):  # the closest marker wins
            meta.update(_chaos_meta(mark))
        meta.setdefault("model", chaos.cluster.get("model"))
        if meta.get("runbook"):
            meta["runbook"] = runbook_url(meta["runbook"], request.config.rootpath)
        allure_results.label(allure_results.Labels(experiment_id, fault.name, chaos.target_name, **meta))
        progress = _progress(request.config)
        result = Experiment(experiment_id, via or target, fault, slo, out, chaos.ledger, progress,
                            scope=allure_results.step,
                            prometheus_url=chaos.prometheus_url or target.prometheus_url,
                            annotations=annotations, workload=workload, arrival=chaos.load.arrival,
                            max_in_flight=chaos.load.max_in_flight).run()
        result.labels = meta
        result.cost = experiment_cost(result, target, slo, chaos.prices)
        chaos.results.append(result)
        summary = result.to_summary()
        try:
            write_run(summary, result.records, out, chaos.ledger)
        except Exception as exc:  # noqa: BLE001 - a report that failed must not hide the verdict
            progress.say(f"{experiment_id}: report files not written: {type(exc).__name__}: {exc}")
            warnings.warn(f"{experiment_id}: report files not written: {exc!r}", stacklevel=1)
        allure_results.verdict_steps(summary)
        allure_results.attach_run(out)
        return result

    return run


def runbook_url(runbook: str, root: Path) -> str:
    """A runbook named by path (`runbooks/gpu_oom.md`) becomes a link: under
    $INFERCHAOS_RUNBOOK_BASE (e.g. the repository's web URL) when set, else the file under
    the experiments' repository (pytest's rootdir)."""
    if re.match(r"[a-z][a-z0-9+.-]*://", runbook):
        return runbook
    base = os.environ.get(RUNBOOK_BASE_ENV)
    if base:
        return base.rstrip("/") + "/" + runbook.lstrip("/")
    return (root / runbook).resolve().as_uri()


def _cluster_info(cluster: LocalCluster) -> dict:
    spec = cluster.spec
    return {"kind": "local", "replicas": spec.replicas, "warm_pool": spec.warm_pool,
            "provisioning_delay_s": spec.provisioning_delay_s, "model": spec.model}

