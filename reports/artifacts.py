"""The files a run leaves beside its verdict, in the forms people open them with.

The request log as CSV (a spreadsheet, pandas), the ledger entries of this experiment
(what was changed and how it was undone), and the probes' samples as JSON — each written
into the experiment's run directory, where the Allure attachments and summary.html find them.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

from inferchaos.faults.ledger import Entry, Ledger
from inferchaos.load.records import FIELDS, RequestRecord

TIMELINE = "timeline.png"
SLO_TABLE = "slo.html"
REQUESTS_CSV = "requests.csv"
LEDGER_JSON = "ledger.json"
PROBES_JSON = "probes.json"

#: the summary keys that are probe measurements rather than verdicts.
PROBE_KEYS = ("fault_window", "phases", "lb_changes", "failover", "cold_starts", "queue_time", "figures", "clock")


def write_requests_csv(records: Iterable[RequestRecord], path: Path, t0: float) -> Path:
    """One row per request; `t_s` (seconds since the run started) first, for plotting."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", *FIELDS])
        for r in records:
            w.writerow([f"{r.start - t0:.4f}", *("" if v is None else v for v in (getattr(r, k) for k in FIELDS))])
    return path


def experiment_entries(ledger: Ledger, experiment: str, since_wall: float) -> list[Entry]:
    """This run's entries: a ledger outlives runs, and an experiment id repeats every night."""
    return [e for e in ledger.entries() if e.experiment == experiment and e.wall >= since_wall]


def write_ledger_json(entries: Sequence[Entry], path: Path) -> Path:
    path.write_text(json.dumps([asdict(e) for e in entries], indent=2))
    return path


def write_probes_json(experiment: dict, path: Path) -> Path:
    path.write_text(json.dumps({k: experiment.get(k) for k in PROBE_KEYS}, indent=2))
    return path
