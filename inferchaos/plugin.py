"""The pytest wiring: options, fixtures and markers for chaos experiments.

`conftest.py` only loads this plugin. Options are validated once at start-up (a bad SLO
file or `--slo-set` is one line and exit code 2, before anything runs); the session
refuses to inject while the ledger shows an unreverted change; SIGTERM becomes
KeyboardInterrupt so every `finally` (fault revert, load stop, cluster stop) runs.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from inferchaos.faults.base import Fault
from inferchaos.faults.ledger import DEFAULT_LEDGER, Ledger
from inferchaos.faults.undo import step
from inferchaos.engine import Experiment, ExperimentResult
from inferchaos.annotations import GRAFANA_TOKEN_ENV, Annotations
from inferchaos import kube_options, load_options
from inferchaos.load_options import LoadOptions
from inferchaos.load.workload import Workload, resolve
from inferchaos.costing import experiment_cost
from inferchaos.errors import InferchaosError, NotOnTarget, UsageError
from inferchaos.progress import CLEAR, Progress
from inferchaos.probes.cost import Prices
from inferchaos.probes.slo import default_slo_path, load_slo
from inferchaos.reports import allure_results, write_run, write_summary
from inferchaos.targets.base import Target
from inferchaos.targets.inventory import inventory_of
from inferchaos.targets.kubernetes.settings import KubeSettings
from inferchaos.targets.local import ClusterSpec, LocalCluster
from inferchaos.targets.local.prometheus import write_targets

FAULT_MARKERS = {
    "spot_reclamation": "spot instance reclaimed mid-inference (notice, then kill)",
    "gpu_oom": "device memory exhausted on a replica",
    "model_load_stall": "model store slow or stalled while replicas load",
    "pipeline_lag": "feature pipeline stopped or feature reads slow",
    "dependency_latency": "latency, jitter or resets toward a dependency",
    "replica_crash": "a replica SIGKILLed",
    "replica_hang": "a replica SIGSTOPped (socket open, no answers)",
    "traffic_surge": "load jumps N-fold for the fault window",
    "wrong_answers": "a replica answers 200 OK with wrong numbers",
    "autoscaled_surge": "a surge on a fleet that autoscales on queue length",
}
TARGETS = ("local", "kubernetes")
RUNBOOK_BASE_ENV = "INFERCHAOS_RUNBOOK_BASE"


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
    #: what environment.properties says of the cluster under test.
    cluster: dict = field(default_factory=dict)
    kube: KubeSettings | None = None
    dry_run: bool = False
    prices: Prices | None = None
    #: what the run tested, for the report (targets.inventory).
    inventory: list[dict] = field(default_factory=list)
    prometheus_url: str | None = None
    grafana_url: str | None = None
    metrics_port: int | None = 0
    metrics_host: str = "127.0.0.1"
    load: LoadOptions = field(default_factory=LoadOptions)
    #: what the load sends, resolved from the server once the target is up.
    workload: Workload | None = None


CHAOS_MARK = ("chaos(severity='normal', owner=None, model=None, runbook=None): what the report says of an "
              "experiment: Allure severity, owning team, model, and a link to its runbook")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("inferchaos", "chaos experiments")
    g.addoption("--target", metavar="NAME", default="local", help="where faults land: local (default) or kubernetes")
    g.addoption("--slo", metavar="FILE", default=None, help="SLO file (default: the one inferchaos ships, experiments/slo.toml in its repository)")
    g.addoption("--slo-set", metavar="KEY=VALUE", action="append", default=[],
                help="override an SLO or phase key for every experiment (repeatable)")
    g.addoption("--chaos-report", metavar="DIR", default=None, help="write DIR/summary.json and per-run artefacts")
    g.addoption("--ledger", metavar="PATH", default=str(DEFAULT_LEDGER), help="fault ledger (default: %(default)s)")
    g.addoption("--state-dir", metavar="DIR", default=None,
                help="run against a local cluster already started with `inferchaos up --detach`")
    g.addoption("--prometheus", metavar="URL", default=None,
                help="Prometheus for the SLO file's PromQL objectives (default: the local cluster's own, if any)")
    g.addoption("--grafana", metavar="URL", default=None,
                help=f"write a Grafana annotation per fault window (token in ${GRAFANA_TOKEN_ENV})")
    g.addoption("--metrics-port", metavar="PORT", default="0",
                help="serve inferchaos_fault_active on [HOST:]PORT/metrics (default host 127.0.0.1; in a pod "
                     "0.0.0.0:9464; port 0: a free one; off: none)")
    g.addoption("--gpu-hour-price", metavar="PRICE", default=None,
                help="price of one GPU-hour: each experiment's report says what its GPU-seconds cost")
    g.addoption("--gpu-price", metavar="TYPE=PRICE", action="append", default=[],
                help="price per GPU-hour of one GPU type (repeatable), e.g. NVIDIA-H100-80GB-HBM3=4.10")
    g.addoption("--chaos-dry-run", action="store_true",
                help="print what each experiment would do to which objects, and change nothing")
    load_options.add_options(parser.getgroup("inferchaos-load", "chaos experiments: the load and the server"))
    kube_options.add_options(parser.getgroup("inferchaos-kubernetes", "chaos experiments: --target kubernetes"))


def pytest_configure(config: pytest.Config) -> None:
    for name, text in FAULT_MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.addinivalue_line("markers", CHAOS_MARK)
    try:
        session = _chaos_session(config)
    except UsageError as exc:
        pytest.exit(f"inferchaos: error: {str(exc).replace(chr(10), chr(92) + 'n')}", returncode=2)
    config.stash[SESSION] = session
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


SESSION = pytest.StashKey[ChaosSession]()


def _chaos_session(config: pytest.Config) -> ChaosSession:
    target = config.getoption("--target")
    if target not in TARGETS:
        raise UsageError(f"--target {target!r}: expected one of {', '.join(TARGETS)}")
    for option in ("--prometheus", "--grafana"):
        url = config.getoption(option)
        if url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
            raise UsageError(f"{option} {url!r}: expected an http(s):// URL")
    port = config.getoption("--metrics-port")
    metrics_host, _, port = port.rpartition(":") if ":" in port else ("127.0.0.1", "", port)
    if port != "off" and not (port.isdigit() and 0 <= int(port) <= 65535 and metrics_host):
        raise UsageError(f"--metrics-port {config.getoption('--metrics-port')!r}: expected [HOST:]PORT "
                         "(PORT 0..65535; HOST 0.0.0.0 in a pod, so Prometheus can scrape it), or off")
    slo_path = Path(config.getoption("--slo") or default_slo_path())
    load = load_options.settings(config.getoption)
    if (load.replica_cmd or load.ready_path) and target != "local":
        raise UsageError("--replica-cmd and --ready-path apply to --target local only")
    if load.replica_cmd:
        ClusterSpec(replica_cmd=load.replica_cmd).validate()  # a bad command template: say so now
    if (load.replica_cmd or load.ready_path) and config.getoption("--state-dir"):
        raise UsageError("--replica-cmd and --ready-path start the session's own cluster; --state-dir attaches "
                         "to one already running: give one or the other")
    overrides = list(config.getoption("--slo-set")) + load.slo_overrides()
    load_slo(slo_path, "spot_reclamation", overrides)  # validates the file and every override now
    report = config.getoption("--chaos-report")
    state_dir = config.getoption("--state-dir")
    if state_dir and target != "local":
        raise UsageError("--state-dir applies to --target local only")
    kube = kube_options.settings(config.getoption) if target == "kubernetes" else None
    price = config.getoption("--gpu-hour-price")
    if price is None and config.getoption("--gpu-price"):
        raise UsageError("--gpu-price needs --gpu-hour-price (the price of every other GPU)")
    prices = Prices.parse(price, config.getoption("--gpu-price")) if price is not None else None
    ledger = Path(config.getoption("--ledger"))
    if ledger.is_dir():
        raise UsageError(f"--ledger {ledger}: is a directory; give the ledger file's path")
    if report and Path(report).exists() and not Path(report).is_dir():
        raise UsageError(f"--chaos-report {report}: is a file; give a directory for the reports")
    if state_dir:
        _check_state_dir(Path(state_dir))
    return ChaosSession(
        target_name=target, slo_path=slo_path, overrides=overrides, ledger=Ledger(config.getoption("--ledger")),
        report_dir=Path(report) if report else Path(".inferchaos/runs"), summary=bool(report),
        state_dir=Path(state_dir) if state_dir else None, prometheus_url=config.getoption("--prometheus"),
        grafana_url=config.getoption("--grafana"), metrics_port=None if port == "off" else int(port), metrics_host=metrics_host,
        kube=kube, dry_run=config.getoption("--chaos-dry-run"), prices=prices, load=load,
    )


def _check_state_dir(path: Path) -> None:
    """A cluster must be running there: say so now, not as a traceback when the fixture attaches."""
    from inferchaos.targets.local.state import read_state

    if path.exists() and not path.is_dir():
        raise UsageError(f"--state-dir {path}: is a file, not a cluster's state directory")
    try:
        state = read_state(path)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"--state-dir {path}: unreadable state ({exc})") from None
    if state is None:
        raise UsageError(f"--state-dir {path}: no local cluster there; start one with "
                         f"`inferchaos up --detach --state-dir {path}`")
    if not LocalCluster.attach(path).running():
        raise UsageError(f"--state-dir {path}: the cluster there is not running ({state.phase}); "
                         f"`inferchaos up --detach --state-dir {path}` starts it")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """A bad `chaos` marker stops the run before anything starts, like a bad option."""
    for item in items:
        for mark in item.iter_markers("chaos"):
            try:
                _chaos_meta(mark)
            except UsageError as exc:
                pytest.exit(f"inferchaos: error: {item.nodeid}: {exc}", returncode=2)


def _chaos_meta(mark: pytest.Mark) -> dict[str, str]:
    known = ("severity", "owner", "model", "runbook")
    if mark.args or set(mark.kwargs) - set(known):
        raise UsageError(f"@pytest.mark.chaos takes keywords {', '.join(known)}; got "
                         f"{', '.join(map(repr, mark.args)) or ', '.join(sorted(set(mark.kwargs) - set(known)))}")
    severity = mark.kwargs.get("severity", "normal")
    if severity not in allure_results.SEVERITIES:
        raise UsageError(f"chaos severity {severity!r} is not one of {', '.join(allure_results.SEVERITIES)}")
    return {k: str(v) for k, v in mark.kwargs.items()}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):  # type: ignore[no-untyped-def]
    """Bad input inside an experiment (a fault parameter, a blast radius past 100%) stops
    the run like a bad option does: one line, exit code 2, and nothing was injected (the
    fault checks before it journals). A fault this target cannot run skips its experiment."""
    outcome = yield
    exc = outcome.excinfo[1] if outcome.excinfo else None
    if isinstance(exc, NotOnTarget):
        outcome.force_exception(pytest.skip.Exception(str(exc), _use_item_location=True))
    elif isinstance(exc, UsageError):
        pytest.exit(f"inferchaos: error: {item.name}: {exc}", returncode=2)


def pytest_sessionfinish(session: pytest.Session) -> None:
    chaos = session.config.stash.get(SESSION, None)
    if chaos is None or not chaos.results:
        return
    alluredir = getattr(session.config.option, "allure_report_dir", None)
    if alluredir:
        allure_results.write_environment(Path(alluredir), allure_results.environment(chaos.target_name, chaos.cluster))
    if chaos.summary:
        write_summary({"target": chaos.target_name, "inventory": chaos.inventory,
                       "experiments": [r.to_summary() for r in chaos.results]}, chaos.report_dir)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    chaos = config.stash.get(SESSION, None)
    if not chaos or not chaos.results:
        return
    terminalreporter.section("chaos verdicts")
    for r in chaos.results:
        terminalreporter.write_line(f"{r.verdict.upper():8} {r.id}")
        if r.inconclusive:
            terminalreporter.write_line(f"           {r.inconclusive}")
        for s in r.slos:
            mark = "ok " if s.ok else "BREACHED"
            terminalreporter.write_line(f"           {mark:9}{s.name} {s.objective}: {s.detail}")
    if chaos.summary:
        terminalreporter.write_line(f"summary: {chaos.report_dir / 'summary.json'} and "
                                    f"{chaos.report_dir / 'summary.html'}")


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
        except InferchaosError as exc:
            pytest.exit(f"inferchaos: error: {exc}", returncode=2)
        chaos.cluster = {"kind": "kubernetes", "context": kube.connection.context, "namespace": kube.namespace,
                         "selector": kube.selector, "replicas": kube.desired_replicas(),
                         "model": chaos.kube.golden_model}
        say(f"target: {kube.describe()}, {len(kube.replicas())} pods; endpoint {kube.lb_url}")
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
    custom = {"replica_cmd": chaos.load.replica_cmd} if chaos.load.replica_cmd else {}
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
    try:
        yield ann
    finally:
        ann.stop()
        if scrape is not None:
            scrape.unlink(missing_ok=True)


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


def _progress(config: pytest.Config) -> Progress:
    """The run's events and live status on pytest's terminal. pytest captures the test's
    output, so write with capture suspended, as pytest's own live logging does; the
    status is redrawn in place only when the terminal is a TTY (plain lines in CI)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return Progress(lambda text: None)
    suspended = capture.global_and_fixture_disabled if capture is not None else contextlib.nullcontext

    def line(text: str) -> None:
        with suspended():
            reporter.write_line(f"  inferchaos: {text}")
            reporter._tw.flush()

    def raw(text: str) -> None:
        with suspended():
            reporter._tw.write(text.replace(CLEAR, CLEAR + "  inferchaos: ") if text != CLEAR else text, flush=True)

    tty = getattr(getattr(reporter._tw, "_file", None), "isatty", lambda: False)()
    return Progress(line, raw if tty else None)
