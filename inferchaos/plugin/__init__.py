"""The pytest wiring: options, fixtures and markers for chaos experiments.

It loads by its `pytest11` entry point wherever inferchaos is installed. The hooks are
here; the session's state in `session`, the fixtures in `fixtures`. Options are validated
once at start-up (a bad SLO file or `--slo-set` is one line and exit code 2, before
anything runs); the session
refuses to inject while the ledger shows an unreverted change; SIGTERM becomes
KeyboardInterrupt so every `finally` (fault revert, load stop, cluster stop) runs.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from inferchaos.faults.ledger import DEFAULT_LEDGER
from inferchaos.annotations import GRAFANA_TOKEN_ENV
from inferchaos import kube_options, load_options
from inferchaos.ground.errors import NotOnTarget, UsageError
from inferchaos.reports import allure_results, write_summary

from inferchaos.plugin.fixtures import annotations, chaos, run_experiment, target, workload  # noqa: F401 - fixtures of the plugin
from inferchaos.plugin.session import CHAOS_MARK, FAULT_MARKERS, SESSION, _chaos_meta, _chaos_session, _interrupt


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("inferchaos", "chaos experiments")
    g.addoption("--target", metavar="NAME", default="local", help="where faults land: local (default) or kubernetes")
    g.addoption("--slo", metavar="FILE", default=None, help="SLO file (default: the one inferchaos ships, experiments/slo.toml in its "
                                                         "repository)")
    g.addoption("--slo-set", metavar="KEY=VALUE", action="append", default=[],
                help="override an SLO or phase key for every experiment (repeatable)")
    g.addoption("--fault-set", metavar="FAULT.KEY=VALUE", action="append", default=[],
                help="set a fault parameter for every experiment of that fault, over the experiment's own "
                     "(repeatable), e.g. spot_reclamation.notice_s=120 (an AWS spot notice)")
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


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """A bad `chaos` marker stops the run before anything starts, like a bad option."""
    for item in items:
        for mark in item.iter_markers("chaos"):
            try:
                _chaos_meta(mark)
            except UsageError as exc:
                pytest.exit(f"inferchaos: error: {item.nodeid}: {exc}", returncode=2)


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
    state = session.config.stash.get(SESSION, None)
    if state is None or not state.results:
        return
    alluredir = getattr(session.config.option, "allure_report_dir", None)
    if alluredir:
        allure_results.write_environment(Path(alluredir), allure_results.environment(state.target_name, state.cluster))
    if state.summary:
        write_summary({"target": state.target_name, "inventory": state.inventory,
                       "experiments": [r.to_summary() for r in state.results]}, state.report_dir)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # type: ignore[no-untyped-def]
    state = config.stash.get(SESSION, None)
    if not state or not state.results:
        return
    terminalreporter.section("chaos verdicts")
    for r in state.results:
        terminalreporter.write_line(f"{r.verdict.upper():8} {r.id}")
        if r.inconclusive:
            terminalreporter.write_line(f"           {r.inconclusive}")
        for s in r.slos:
            mark = "ok " if s.ok else "BREACHED"
            terminalreporter.write_line(f"           {mark:9}{s.name} {s.objective}: {s.detail}")
    if state.summary:
        terminalreporter.write_line(f"summary: {state.report_dir / 'summary.json'} and "
                                    f"{state.report_dir / 'summary.html'}")

