"""Writes a run's report files: per experiment as it finishes, the summary at the end.

Everything is drawn from data the run already measured (the experiment's summary entry; the
request log only to copy it as CSV), so `inferchaos report DIR` can write the same files again.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import ModuleType
from typing import Sequence

from inferchaos.faults.ledger import Ledger
from inferchaos.load.records import RequestRecord
from inferchaos.reports import artifacts, html, timeline

SIDE_BY_SIDE = "autoscaling.png"
NO_PLOTS = "timelines are not drawn: matplotlib is missing (pip install 'inferchaos[reports]')"


def _plotting() -> ModuleType | None:
    """The plot module, or None without matplotlib (the `reports` extra): every other
    report file is still written, and the HTML says there is no timeline."""
    try:
        from inferchaos.reports import plot
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "matplotlib":
            raise
        warnings.warn(NO_PLOTS, stacklevel=3)
        return None
    return plot


def _draw(experiment: dict, path: Path) -> bool:
    plot = _plotting()
    if plot is not None:
        plot.plot(timeline.build(experiment), path)
    return plot is not None


def write_run(experiment: dict, records: Sequence[RequestRecord], run_dir: Path, ledger: Ledger | None) -> Path:
    """The experiment's timeline, SLO table, CSV request log, ledger and probe files."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _draw(experiment, run_dir / artifacts.TIMELINE)
    (run_dir / artifacts.SLO_TABLE).write_text(html.slo_page(experiment))
    artifacts.write_requests_csv(records, run_dir / artifacts.REQUESTS_CSV, experiment["clock"]["t0_monotonic"])
    if ledger is not None:
        entries = artifacts.experiment_entries(ledger, experiment["id"], experiment["clock"]["wall0"])
        artifacts.write_ledger_json(entries, run_dir / artifacts.LEDGER_JSON)
    artifacts.write_probes_json(experiment, run_dir / artifacts.PROBES_JSON)
    return run_dir


def run_dir_of(experiment: dict, report_dir: Path) -> Path:
    log = experiment.get("request_log")
    return Path(log).parent if log else report_dir / experiment["id"]


def write_summary(summary: dict, report_dir: Path) -> tuple[Path, Path]:
    """summary.json (the machine's verdict) and summary.html (the person's)."""
    report_dir.mkdir(parents=True, exist_ok=True)
    as_json = report_dir / "summary.json"
    as_json.write_text(json.dumps(summary, indent=2))
    return as_json, write_summary_html(summary, report_dir)


def write_summary_html(summary: dict, report_dir: Path) -> Path:
    timelines = {e["id"]: run_dir_of(e, report_dir) / artifacts.TIMELINE for e in summary["experiments"]}
    page = report_dir / "summary.html"
    page.write_text(html.summary_page(summary, timelines, write_side_by_side(summary, report_dir)))
    return page


def write_side_by_side(summary: dict, report_dir: Path) -> Path | None:
    """The autoscaled experiments on one axis, when there are two or more to compare."""
    scaled = [e for e in summary["experiments"] if (e.get("autoscaling") or {}).get("samples")
              and e.get("fault_window", {}).get("inject_s") is not None and e.get("series")]
    if len(scaled) < 2 or _plotting() is None:
        return None
    from inferchaos.reports.side_by_side import plot_side_by_side
    return plot_side_by_side(scaled, report_dir / SIDE_BY_SIDE)


def replot_missing(summary: dict, report_dir: Path) -> list[Path]:
    """Timelines for experiments that have a series but no plot (a run killed before its
    report was written gets its series from its request log first: `inferchaos report`)."""
    done = []
    for e in summary["experiments"]:
        run_dir = run_dir_of(e, report_dir)
        if not (run_dir / artifacts.TIMELINE).is_file() and e.get("series"):
            if _draw(e, run_dir / artifacts.TIMELINE):
                done.append(run_dir / artifacts.TIMELINE)
    return done
