"""Checks of what a run reported, shared by the tests that run experiments for real.

They open the files as their readers would: Allure's result JSON and attachments, the
PNG's pixels, the CSV, the ledger.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image

from inferchaos.faults.ledger import Ledger
from inferchaos.reports.plot import FAULT_RGB, read_geometry

STEPS = ["steady state", "prepare", "baseline", "inject", "hold", "revert", "recovery", "verdict"]
ATTACHMENTS = {"timeline": "image/png", "SLOs": "text/html", "request log": "text/csv",
               "ledger entries": "application/json", "probe samples": "application/json"}
#: how far the band's edge may sit from the ledger's time: the ledger is written within
#: milliseconds of the phase boundary; the rest is a pixel or two of antialiasing.
EDGE_TOLERANCE_S = 0.15


def allure_result(alluredir: Path, experiment_id: str) -> dict:
    found = []
    for f in alluredir.glob("*-result.json"):
        d = json.loads(f.read_text())
        if {"name": "story", "value": experiment_id} in d.get("labels", []):
            found.append(d)
    assert len(found) == 1, f"{len(found)} Allure results with story {experiment_id} in {alluredir}"
    return found[0]


def labels(result: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for label in result["labels"]:
        out.setdefault(label["name"], []).append(label["value"])
    return out


def attachment(alluredir: Path, result: dict, name: str) -> Path:
    (a,) = [a for a in result.get("attachments", []) if a["name"] == name]
    assert a["type"] == ATTACHMENTS[name], a
    path = alluredir / a["source"]
    assert path.is_file() and path.stat().st_size > 0, path
    return path


def band_edges_s(png: Path) -> tuple[float, float]:
    """The shaded fault band's first and last column in the fault strip, as run seconds."""
    g = read_geometry(png)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == (g.width, g.height)
        rgb = im.convert("RGB")
        row = (g.strip_rows[0] + g.strip_rows[1]) // 2
        cols = [x for x in range(g.width)
                if all(abs(c - f) <= 6 for c, f in zip(rgb.getpixel((x, row)), FAULT_RGB))]
    assert cols, f"no fault band in {png}"
    assert cols[-1] - cols[0] + 1 == len(cols), "the band is one unbroken run"
    return (cols[0] - g.x0_px) / g.px_per_s, (cols[-1] + 1 - g.x0_px) / g.px_per_s


def ledger_window_s(ledger: Path, experiment: dict) -> tuple[float, float]:
    """When the ledger says this experiment's fault was injected and reverted, in run seconds."""
    wall0 = experiment["clock"]["wall0"]
    entries = [e for e in Ledger(ledger).entries() if e.experiment == experiment["id"] and e.fault == experiment["fault"]
               and e.wall >= wall0]
    injected = [e.wall for e in entries if e.event == "applied" and e.detail == "injected"]
    reverted = [e.wall for e in entries if e.event == "reverted"]
    assert injected and len(reverted) == 1, entries
    return min(injected) - wall0, reverted[0] - wall0


def assert_experiment_reported(alluredir: Path, experiment: dict, ledger: Path) -> dict:
    """Steps, labels and every attachment of one experiment's Allure result; returns it."""
    result = allure_result(alluredir, experiment["id"])
    tags = labels(result)
    assert tags["epic"] == ["chaos"] and tags["feature"] == [experiment["fault"]], tags
    assert tags["severity"] and tags["target"] == ["local"], tags
    names = [s["name"] for s in result.get("steps", [])]
    assert [n.split(" ")[0].rstrip(":") for n in names] == [s.split(" ")[0] for s in STEPS], names
    (verdict,) = [s for s in result["steps"] if s["name"].startswith("verdict")]
    slo_steps = {s["name"].split(" ")[0]: s["status"] for s in verdict["steps"]}
    assert slo_steps == {s["name"]: "passed" if s["ok"] else "failed" for s in experiment["slos"]}, slo_steps
    assert verdict["status"] == ("passed" if all(s["ok"] for s in experiment["slos"]) else "failed")

    assert {a["name"] for a in result["attachments"]} == set(ATTACHMENTS), result["attachments"]
    png = attachment(alluredir, result, "timeline")
    band = band_edges_s(png)
    journal = ledger_window_s(ledger, experiment)
    fw = experiment["fault_window"]
    for got, want, summary in zip(band, journal, (fw["inject_s"], fw["revert_s"])):
        assert abs(got - want) <= EDGE_TOLERANCE_S, f"band {band} vs ledger {journal}"
        assert abs(summary - want) <= EDGE_TOLERANCE_S, f"summary {fw} vs ledger {journal}"

    with open(attachment(alluredir, result, "request log"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == experiment["requests"] and rows[0]["t_s"] and "latency_s" in rows[0]
    entries = json.loads(attachment(alluredir, result, "ledger entries").read_text())
    assert {e["fault"] for e in entries} >= {experiment["fault"], "load"}, entries
    table = attachment(alluredir, result, "SLOs").read_text()
    assert all(s["name"] in table for s in experiment["slos"])
    probes = json.loads(attachment(alluredir, result, "probe samples").read_text())
    assert probes["lb_changes"] and probes["fault_window"] == fw
    return result
