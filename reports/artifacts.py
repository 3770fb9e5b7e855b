"""The files a run leaves beside its verdict, in the forms people open them with.

The request log as CSV (a spreadsheet, pandas), the ledger entries of this experiment
(what was changed and how it was undone), and the probes' samples as JSON — each written
into the experiment's run directory, where the Allure attachments and summary.html find them.

The ledger itself is 0600; its copy here is not a ledger but a report, made to be shared
(Allure results, the HTML site `allure generate` builds from them, CI artifacts, the
reports volume), and a file mode does not travel with any of those copies. So the copy
leaves out what says how to reach the cluster with whose credentials: each entry's target
`connection` and each undo step's `conn` (kubeconfig path, context, cluster) are replaced
by REDACTED. Nothing reads them back from a report: `inferchaos recover` reads the ledger.
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
#: what a report's copy of the ledger says in place of a connection.
REDACTED = "(left out of reports: see the ledger)"
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


def shareable(entry: Entry) -> dict:
    """An entry as a report shows it: its target's `connection` and each undo step's `conn`
    replaced by REDACTED; everything else as the ledger has it."""
    d = asdict(entry)
    if isinstance(d.get("target"), dict) and d["target"].get("connection") is not None:
        d["target"] = {**d["target"], "connection": REDACTED}
    d["undo"] = [{**u, "args": {**u["args"], "conn": REDACTED}} if u.get("args", {}).get("conn") is not None else u
                 for u in d.get("undo") or ()]
    return d


def write_ledger_json(entries: Sequence[Entry], path: Path) -> Path:
    path.write_text(json.dumps([shareable(e) for e in entries], indent=2))
    return path


def write_probes_json(experiment: dict, path: Path) -> Path:
    path.write_text(json.dumps({k: experiment.get(k) for k in PROBE_KEYS}, indent=2))
    return path
