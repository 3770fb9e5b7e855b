"""The experiment as an Allure result: phases as steps, labels to group and filter by,
the run's files attached, and `environment.properties` for the whole session.

allure-pytest records nothing unless pytest runs with `--alluredir`; then these calls
land in the current test's result. Without it they cost nothing, so the plugin calls
them unconditionally. The only module of ours that imports allure, and only when it is
installed (`pip install 'inferchaos[reports]'`): without it these calls do nothing.
"""

from __future__ import annotations

import contextlib
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterator, Mapping

try:
    import allure
except ImportError:  # the `reports` extra is not installed: there is no --alluredir either
    allure = None

from inferchaos.reports import artifacts

SEVERITIES = ("blocker", "critical", "normal", "minor", "trivial")


@dataclass(frozen=True)
class Labels:
    """What an experiment says about itself (`@pytest.mark.chaos(...)`) and what the run knows."""

    experiment: str
    fault: str
    target: str
    severity: str = "normal"
    owner: str | None = None
    model: str | None = None
    runbook: str | None = None


def label(labels: Labels) -> None:
    if allure is None:
        return
    allure.dynamic.epic("chaos")
    allure.dynamic.feature(labels.fault)
    allure.dynamic.story(labels.experiment)
    allure.dynamic.severity(allure.severity_level(labels.severity))
    allure.dynamic.tag(f"target:{labels.target}")
    allure.dynamic.label("target", labels.target)
    if labels.owner:
        allure.dynamic.label("owner", labels.owner)
    if labels.model:
        allure.dynamic.label("model", labels.model)
    if labels.runbook:
        allure.dynamic.link(labels.runbook, name="runbook")


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    if allure is None:
        yield
        return
    with allure.step(title):
        yield


def verdict_steps(experiment: dict) -> None:
    """One step per SLO under a verdict step; a breached SLO is a failed step, so the
    Allure tree shows which objective failed without opening an attachment."""
    if allure is None:
        return
    with contextlib.suppress(AssertionError), allure.step(f"verdict: {experiment['verdict']}"):
        failed = []
        if experiment.get("inconclusive"):
            try:
                with allure.step(f"inconclusive: {experiment['inconclusive']}"):
                    raise AssertionError(f"inconclusive: {experiment['inconclusive']}")
            except AssertionError as exc:
                failed.append(str(exc))
        for s in experiment.get("slos", []):
            try:
                with allure.step(f"{s['name']} {s['objective']}: {s.get('detail') or ''}"):
                    if not s["ok"]:
                        raise AssertionError(f"{s['name']} breached: {s.get('detail')}")
            except AssertionError as exc:
                failed.append(str(exc))
        if failed:
            raise AssertionError("; ".join(failed))


def attach_run(run_dir: Path) -> None:
    """Attach what `reports.write_run` left in the experiment's directory."""
    if allure is None:
        return
    kinds = [
        (artifacts.TIMELINE, "timeline", allure.attachment_type.PNG),
        (artifacts.SLO_TABLE, "SLOs", allure.attachment_type.HTML),
        (artifacts.REQUESTS_CSV, "request log", allure.attachment_type.CSV),
        (artifacts.LEDGER_JSON, "ledger entries", allure.attachment_type.JSON),
        (artifacts.PROBES_JSON, "probe samples", allure.attachment_type.JSON),
    ]
    for name, title, kind in kinds:
        path = run_dir / name
        if path.is_file():
            allure.attach.file(str(path), name=title, attachment_type=kind)


def write_environment(results_dir: Path, properties: Mapping[str, object]) -> Path:
    """allure-pytest never writes environment.properties; it must come after
    `--clean-alluredir` wiped the folder, so at session finish."""
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "environment.properties"
    lines = [f"{_escape(k)}={_escape(str(v))}" for k, v in properties.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


def environment(target: str, cluster: Mapping[str, object]) -> dict[str, object]:
    props: dict[str, object] = {"target": target, **{f"cluster.{k}": v for k, v in cluster.items()}}
    props["python"] = platform.python_version()
    for dist in ("inferchaos", "locust", "allure-pytest", "kubernetes", "nvidia-ml-py"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            props[dist] = metadata.version(dist)
    props["haproxy"] = _first_line(["haproxy", "-v"])
    props["git.commit"] = _first_line(["git", "rev-parse", "HEAD"])
    props["host"] = platform.node()
    return props


def _first_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def _escape(text: str) -> str:
    """Java properties: backslash, and the separators in keys."""
    return text.replace("\\", "\\\\").replace("\n", " ")
