"""What one pytest session of experiments holds: the options read and checked once at
start-up, the ledger, the report directory, the progress line."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from inferchaos.faults.catalogue import CATALOGUE, fault_sets
from inferchaos.faults.ledger import Ledger
from inferchaos.engine import ExperimentResult
from inferchaos import kube_options, load_options
from inferchaos.load_options import LoadOptions
from inferchaos.load.workload import Workload
from inferchaos.ground.errors import UsageError
from inferchaos.progress import CLEAR, Progress
from inferchaos.probes.cost import Prices
from inferchaos.probes.slo import default_slo_path, load_slo
from inferchaos.reports import allure_results
from inferchaos.targets.kubernetes.settings import KubeSettings
from inferchaos.targets.local import ClusterSpec, LocalCluster


#: one pytest marker per fault, from its spec.
FAULT_MARKERS = {spec.name: spec.marker for spec in CATALOGUE.values()}
TARGETS = ("local", "kubernetes")
RUNBOOK_BASE_ENV = "INFERCHAOS_RUNBOOK_BASE"



CHAOS_MARK = ("chaos(severity='normal', owner=None, model=None, runbook=None): what the report says of an "
              "experiment: Allure severity, owning team, model, and a link to its runbook")


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
    #: --fault-set: per fault, parameters over the experiments' own (checked for the target kind).
    fault_sets: dict[str, dict] = field(default_factory=dict)
    #: what the load sends, resolved from the server once the target is up.
    workload: Workload | None = None


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
    sets = fault_sets(list(config.getoption("--fault-set")), target)
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
        kube=kube, dry_run=config.getoption("--chaos-dry-run"), prices=prices, load=load, fault_sets=sets,
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


def _chaos_meta(mark: pytest.Mark) -> dict[str, str]:
    known = ("severity", "owner", "model", "runbook")
    if mark.args or set(mark.kwargs) - set(known):
        raise UsageError(f"@pytest.mark.chaos takes keywords {', '.join(known)}; got "
                         f"{', '.join(map(repr, mark.args)) or ', '.join(sorted(set(mark.kwargs) - set(known)))}")
    severity = mark.kwargs.get("severity", "normal")
    if severity not in allure_results.SEVERITIES:
        raise UsageError(f"chaos severity {severity!r} is not one of {', '.join(allure_results.SEVERITIES)}")
    return {k: str(v) for k, v in mark.kwargs.items()}


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


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")

