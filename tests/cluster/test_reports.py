"""The report layer on data alone: timeline, plot, HTML, compare, the Allure site, the CLI.

The runs these read are built here from records like the load generator writes, so every
case (a breach, an error run, a regression) can be planted exactly.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inferchaos.cli.reports import series_from_log
from inferchaos.load.records import RequestRecord
from inferchaos.probes.requests import run_series
from inferchaos.reports import allure_site, compare, html, plot, render, timeline
from inferchaos.reports.allure_results import environment, write_environment
from inferchaos.reports.writer import replot_missing, write_summary
from tests.support.reportcheck import band_edges_s
from tests.support.inner import PYTEST

REPO = Path(__file__).resolve().parents[2]
T0, WALL0 = 1000.0, 1_790_000_000.0


def records(n_s: int = 20, rps: int = 20, slow: tuple[float, float] = (8, 12), fail: tuple[float, float] = (9, 10)):
    out = []
    for i in range(n_s * rps):
        t = i / rps
        latency = 0.5 if slow[0] <= t < slow[1] else 0.05
        ok = not fail[0] <= t < fail[1]
        out.append(RequestRecord(T0 + t, WALL0 + t, latency, "infer", 200 if ok else 503, ok,
                                 None if ok else "HTTP 503", "replica-1"))
    return out


def slo(name: str, objective: str, observed: float | None, ok: bool) -> dict:
    return {"name": name, "objective": objective, "observed": observed, "ok": ok,
            "detail": "not measured: x" if observed is None else f"observed {observed}"}


def experiment(id: str = "spot_reclamation", verdict: str = "pass", p99: float = 120.0, p99_ok: bool = True,
               window: tuple[float, float] | None = (6.0, 14.0)) -> dict:
    phases = [("baseline", 0.5, 6.0), ("inject", 6.0, 6.01), ("hold", 6.01, 14.0), ("revert", 14.0, 14.02),
              ("recovery", 14.02, 20.0)]
    return {
        "id": id, "fault": "spot_reclamation", "verdict": verdict, "requests": 400,
        "slos": [slo("availability", ">= 0.99", 0.995, True), slo("p99_ms", "<= 2000 ms", p99, p99_ok),
                 slo("failover_s", "<= 8 s", 0.1, True)],
        "fault_window": {"inject_s": window[0], "revert_s": window[1], "inject_wall": WALL0 + window[0],
                         "revert_wall": WALL0 + window[1]} if window else
        {"inject_s": None, "revert_s": None, "inject_wall": None, "revert_wall": None},
        "phases": [{"name": n, "start_s": a, "end_s": b} for n, a, b in phases],
        "failover": [{"replica": "replica-1", "port": 1, "server": "r1", "died_at": 8.0, "ejected_at": 8.2,
                      "failover_s": 0.2, "failed_before_ejection": 3, "served_after_death": 0,
                      "replacement": "replica-4", "replacement_traffic_s": 4.0}],
        "lb_changes": [{"t": 0.1, "server": "r1", "port": 1, "state": "running"},
                       {"t": 0.1, "server": "r2", "port": 2, "state": "running"},
                       {"t": 8.2, "server": "r1", "port": 1, "state": "stopped"},
                       {"t": 11.0, "server": "r1", "port": 4, "state": "starting"},
                       {"t": 13.0, "server": "r1", "port": 4, "state": "running"}],
        "clock": {"t0_monotonic": T0, "wall0": WALL0}, "aborted": None, "error": None,
        # what the run measured step by step (the engine's run_series over these records)
        "series": run_series(records(), T0, [T0 + b for _, _, b in phases]).to_dict(),
    }


# ----------------------------------------------------------------------------- timeline
def test_timeline_buckets_lanes_and_marks():
    tl = timeline.build(experiment())
    assert len(tl.buckets) == 20 and tl.buckets[0].t == 0.0
    by_t = {b.t: b for b in tl.buckets}
    assert by_t[9.0].errors_per_s == 20 and by_t[8.0].errors_per_s == 0
    assert by_t[10.0].p99_ms == pytest.approx(500) and by_t[2.0].p99_ms == pytest.approx(50)
    assert tl.fault_window == (6.0, 14.0)
    assert [(s.state, s.start, s.end) for s in tl.lb["r1"]] == [
        ("running", 0.1, 8.2), ("stopped", 8.2, 11.0), ("starting", 11.0, 13.0), ("running", 13.0, tl.end)]
    assert [m.label for m in tl.marks] == ["replica-1 died", "LB ejected r1", "replica-4 serving"]
    assert tl.marks[-1].t == 12.0


def test_the_plot_is_a_png_whose_band_is_the_fault_window(tmp_path):
    png = tmp_path / "t.png"
    geometry = plot.plot(timeline.build(experiment(window=(6.0, 14.0))), png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot.read_geometry(png) == geometry
    start, end = band_edges_s(png)
    assert abs(start - 6.0) < 0.1 and abs(end - 14.0) < 0.1, (start, end)

    moved = tmp_path / "moved.png"
    plot.plot(timeline.build(experiment(window=(3.0, 5.0))), moved)
    start, end = band_edges_s(moved)
    assert abs(start - 3.0) < 0.1 and abs(end - 5.0) < 0.1, "the band follows the data, it is not drawn fixed"


def test_a_run_that_never_injected_has_no_band(tmp_path):
    png = tmp_path / "t.png"
    plot.plot(timeline.build(experiment(verdict="error", window=None)), png)
    with pytest.raises(AssertionError, match="no fault band"):
        band_edges_s(png)


# ----------------------------------------------------------------------------- html
def test_slo_table_marks_the_breached_row():
    table = html.slo_table(experiment(verdict="fail", p99=2400.0, p99_ok=False))
    rows = table.split("<tr")
    (p99_row,) = [r for r in rows if "p99_ms" in r]
    assert 'class="breached"' in p99_row and "BREACHED" in p99_row and "2400" in p99_row
    assert all("breached" not in r for r in rows if "availability" in r)


def test_summary_html_is_one_file_with_the_images_inlined(tmp_path):
    e1, e2 = experiment("a"), experiment("b", verdict="fail", p99=2400.0, p99_ok=False)
    e1["load"] = {"describe": "closed loop, 4 users"}
    e2["load"] = {"describe": "open loop, 100 req/s (poisson)"}
    for e in (e1, e2):
        run = tmp_path / e["id"]
        run.mkdir()
        e["request_log"] = str(run / "requests.jsonl")
        plot.plot(timeline.build(e), run / "timeline.png")
    _, page = write_summary({"target": "local", "experiments": [e1, e2]}, tmp_path)
    text = page.read_text()
    assert text.count("data:image/png;base64,") == 2 and "src=\"timeline" not in text
    assert "<td class=pass>PASS</td>" in text and "<td class=fail>FAIL</td>" in text
    assert "1 pass, 1 fail" in text and "<td>p99_ms</td></tr>" in text  # b's breached column
    # which load ran is on the page: a closed-loop verdict is not an open-loop one
    assert "load: closed loop, 4 users" in text and "load: open loop, 100 req/s (poisson)" in text
    assert json.loads((tmp_path / "summary.json").read_text())["experiments"][1]["verdict"] == "fail"


def test_a_killed_run_gets_its_timeline_drawn_later(tmp_path):
    from inferchaos.load.records import write_log

    e = experiment()
    run = tmp_path / e["id"]
    run.mkdir()
    write_log(run / "requests.jsonl", records())
    e["request_log"] = str(run / "requests.jsonl")
    del e["series"]  # killed before its report: the log is all there is
    assert replot_missing({"experiments": [e]}, tmp_path) == [], "the reports draw, they do not measure"
    e["series"] = series_from_log(e, tmp_path)  # what `inferchaos report DIR` does first
    assert e["series"] == experiment()["series"], "the same series the run would have measured"
    assert replot_missing({"experiments": [e]}, tmp_path) == [run / "timeline.png"]
    assert replot_missing({"experiments": [e]}, tmp_path) == [], "drawn once"


def test_a_malformed_series_in_summary_json_is_one_usage_error(tmp_path):
    """summary.json is read back from disk: a series that is not buckets is refused by name."""
    from inferchaos.ground.errors import UsageError

    for bad in ("not a list", [{"t": 0}], [dict(experiment()["series"]["buckets"][0], rps="fast")]):
        e = experiment()
        e["series"]["buckets"] = bad
        with pytest.raises(UsageError, match=r"^spot_reclamation: summary.json's series is not a list of buckets"):
            timeline.build(e)
    assert timeline.build(experiment()).buckets, "a well-formed series still draws"


# ----------------------------------------------------------------------------- compare
def test_compare_names_a_planted_regression():
    old = {"experiments": [experiment("spot"), experiment("crash"), experiment("gone")]}
    worse = experiment("spot", verdict="fail", p99=2400.0, p99_ok=False)
    slower = experiment("crash", p99=600.0)  # still within 2000 ms, but 5x slower
    new = {"experiments": [worse, slower, experiment("new")]}
    changes = compare(old, new)
    text = render(changes, "last", "tonight")
    regressions = [c for c in changes if c.regression]
    assert {(c.experiment, c.name) for c in regressions} == {("spot", "verdict"), ("spot", "p99_ms"), ("gone", "gone")}
    assert "spot: verdict pass -> fail (REGRESSION)" in text
    assert "spot: p99_ms 120 -> 2400 (objective <= 2000 ms): newly BREACHED (REGRESSION)" in text
    assert "crash: p99_ms 120 -> 600 (objective <= 2000 ms): worse by 400%" in text
    assert "gone: missing: not run or skipped (was pass) (REGRESSION)" in text
    assert "new: new experiment, pass" in text
    assert text.splitlines()[0] == "last -> tonight: 5 changes, 3 regressions"


def test_compare_calls_newly_unmeasured_and_inconclusive_regressions():
    old = {"experiments": [experiment("a"), experiment("b"), experiment("c")]}
    blind = experiment("a")
    blind["slos"][0] = blind["slos"][0] | {"observed": None, "detail": "not measured (optional): no requests"}
    dropped = experiment("b")
    dropped["slos"] = dropped["slos"][1:]
    unsure = experiment("c", verdict="inconclusive")
    changes = compare(old, {"experiments": [blind, dropped, unsure]})
    regressions = {(c.experiment, c.name) for c in changes if c.regression}
    name_a, name_b = old["experiments"][0]["slos"][0]["name"], old["experiments"][1]["slos"][0]["name"]
    assert {("a", name_a), ("b", name_b), ("c", "verdict")} <= regressions, render(changes, "o", "n")
    # the same runs, nothing lost: quiet
    assert not [c for c in compare(old, old) if c.regression]


def test_compare_of_a_run_with_itself_is_quiet():
    run = {"experiments": [experiment("spot")]}
    assert compare(run, run) == []
    assert "no changes" in render([], "a", "b")


def test_direction_comes_from_the_objective():
    old = {"experiments": [experiment("x")]}
    new = {"experiments": [experiment("x")]}
    new["experiments"][0]["slos"][0] = slo("availability", ">= 0.99", 0.999, True)
    old["experiments"][0]["slos"][0] = slo("availability", ">= 0.99", 0.5, False)
    (change,) = compare(old, new)
    assert not change.regression and "back within objective" in change.text


def cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferchaos.cli", *argv], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


def test_report_compare_cli_exit_codes(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text(json.dumps({"experiments": [experiment("spot")]}))
    bad = {"experiments": [experiment("spot", verdict="fail", p99=2400.0, p99_ok=False)]}
    (tmp_path / "new.json").write_text(json.dumps(bad))
    proc = cli("report", "--compare", str(tmp_path / "old"), str(tmp_path / "new.json"))
    assert proc.returncode == 1, proc.stderr
    assert "spot: p99_ms 120 -> 2400" in proc.stdout and "REGRESSION" in proc.stdout
    proc = cli("report", "--compare", str(tmp_path / "old"), str(tmp_path / "old"))
    assert proc.returncode == 0 and "no changes" in proc.stdout


@pytest.mark.parametrize("case", ["missing", "not json", "not a summary", "both", "neither"])
def test_report_bad_input_is_one_line_and_exit_2(tmp_path, case):
    (tmp_path / "garbage.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    argv = {"missing": ["--compare", str(tmp_path / "nope"), str(tmp_path / "other.json")],
            "not json": [str(tmp_path / "garbage.json")],
            "not a summary": ["--compare", str(tmp_path / "other.json"), str(tmp_path / "other.json")],
            "both": [str(tmp_path), "--compare", "a", "b"],
            "neither": []}[case]
    proc = cli("report", *argv)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("inferchaos: error: ")
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- the Allure site
def _results(tmp_path: Path) -> Path:
    """Real Allure results: a tiny pytest run with allure-pytest."""
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "test_x.py").write_text("import allure\n\ndef test_x():\n    with allure.step('a step'):\n"
                                     "        allure.attach('hi', name='note')\n")
    subprocess.run([*PYTEST, "-q", f"--alluredir={tmp_path / 'results'}", str(inner / "test_x.py")],
                   check=True, capture_output=True, timeout=120, cwd=inner)
    return tmp_path / "results"


LABELLED = """
from inferchaos.reports.allure_results import Labels, label

def test_x():
    label(Labels("spot_two_nodes", "spot_reclamation", "local", severity="critical", owner="ml-platform",
                 model="llama-8b", runbook="https://wiki.example/runbooks/spot"))
"""


def test_labels_and_the_runbook_link_reach_the_allure_result(tmp_path):
    (tmp_path / "test_l.py").write_text(LABELLED)
    subprocess.run([*PYTEST, "-q", f"--alluredir={tmp_path / 'results'}", str(tmp_path / "test_l.py")],
                   check=True, capture_output=True, timeout=120, cwd=tmp_path)
    (result,) = [json.loads(f.read_text()) for f in (tmp_path / "results").glob("*-result.json")]
    tags = {(x["name"], x["value"]) for x in result["labels"]}
    assert {("epic", "chaos"), ("feature", "spot_reclamation"), ("story", "spot_two_nodes"), ("severity", "critical"),
            ("owner", "ml-platform"), ("model", "llama-8b"), ("target", "local")} <= tags
    assert {"name": "runbook", "url": "https://wiki.example/runbooks/spot", "type": "link"} in result["links"]


def test_without_node_the_report_says_how_to_get_it(tmp_path, monkeypatch):
    results = _results(tmp_path)
    monkeypatch.delenv("INFERCHAOS_ALLURE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    rendered = allure_site.render(results, tmp_path / "site")
    assert not rendered.ok and "Node.js not found" in rendered.message and "npm install -g allure" in rendered.message
    assert not (tmp_path / "site").exists()


def test_no_results_is_said_plainly(tmp_path):
    rendered = allure_site.render(tmp_path / "nothing", tmp_path / "site")
    assert not rendered.ok and "no Allure results" in rendered.message


def test_allure3_renders_the_results_to_html(tmp_path, monkeypatch):
    local = Path(sys.prefix) / "node" / "node_modules" / ".bin" / "allure"
    if shutil.which("node") is None or not (local.exists() or shutil.which("allure")):
        pytest.skip("Allure 3 not installed here (`make setup` installs it into .venv/node when npm exists)")
    monkeypatch.delenv("INFERCHAOS_ALLURE", raising=False)
    rendered = allure_site.render(_results(tmp_path), tmp_path / "site")
    assert rendered.ok, rendered.message
    assert rendered.index == tmp_path / "site" / "index.html" and rendered.index.stat().st_size > 0


# ----------------------------------------------------------------------------- environment.properties
def test_environment_properties_are_written_and_escaped(tmp_path):
    props = environment("local", {"replicas": 3, "model": "mlp"})
    assert props["target"] == "local" and props["cluster.replicas"] == 3 and props["python"]
    path = write_environment(tmp_path / "allure", {**props, "odd": "a\\b\nc", "none": None})
    lines = path.read_text().splitlines()
    assert "cluster.model=mlp" in lines and "odd=a\\\\b c" in lines and not any(x.startswith("none") for x in lines)


# ----------------------------------------------------------------------------- the chaos marker
BAD_MARKER = """
import pytest

@pytest.mark.chaos(severity="urgent")
def test_x(run_experiment):
    raise AssertionError("never runs")
"""


def test_a_bad_chaos_marker_stops_the_run_before_anything_starts(tmp_path):
    (tmp_path / "test_bad.py").write_text(BAD_MARKER)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    proc = subprocess.run([*PYTEST, "--ledger", str(tmp_path / "ledger.jsonl"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    (line,) = [x for x in out.splitlines() if "inferchaos: error:" in x]
    assert "severity 'urgent'" in line and "blocker, critical, normal" in line
    assert not (tmp_path / "ledger.jsonl").exists()
