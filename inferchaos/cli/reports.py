"""`report`, `inventory`: what a run left, and what runs where."""

from __future__ import annotations

import argparse
from pathlib import Path

from inferchaos.cli.inputs import add_verb
from inferchaos.ground.errors import UsageError


def add(sub: argparse._SubParsersAction) -> None:
    """report, inventory."""
    rep = add_verb(sub, "report", "render a run's reports, or compare two runs",
                  "Render a finished run's report directory (the --chaos-report DIR of a "
                  "pytest run): timelines missing from it, summary.html, and the Allure HTML site from "
                  "DIR/allure-results with the npm package `allure` when Node.js is present. With "
                  "--compare, print what changed between two runs: verdict flips, newly breached SLOs, "
                  "observed values that moved more than 10%; exit code 1 when anything regressed.",
                  "  inferchaos report reports/out\n  inferchaos report --compare last/ tonight/")
    rep.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="the report directory (holds summary.json)")
    rep.add_argument("--allure-results", type=Path, metavar="DIR",
                     help="Allure results to render (default: DIR/allure-results)")
    rep.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"),
                     help="two summary.json files, or report directories holding them")

    from inferchaos.targets.inventory import command as inventory

    inv = add_verb(sub, "inventory", "list inference workloads, their GPUs and owners (shadow AI)",
                  inventory.DESCRIPTION, inventory.EXAMPLES)
    inventory.add_arguments(inv)



def cmd_report(args: argparse.Namespace) -> int:
    from inferchaos.reports import compare, load_summary, render, replot_missing, write_summary_html
    from inferchaos.reports.allure_site import render as render_allure

    if args.compare:
        if args.dir is not None:
            raise UsageError("give either DIR or --compare OLD NEW, not both")
        old, new = (load_summary(p) for p in args.compare)
        changes = compare(old, new)
        print(render(changes, str(args.compare[0]), str(args.compare[1])))
        return 1 if any(c.regression for c in changes) else 0
    if args.dir is None:
        raise UsageError("report needs DIR (a --chaos-report directory) or --compare OLD NEW")
    summary = load_summary(args.dir)
    for e in summary["experiments"]:
        if not e.get("series"):
            e["series"] = series_from_log(e, args.dir)
    for png in replot_missing(summary, args.dir):
        print(f"timeline: {png}")
    print(f"summary: {write_summary_html(summary, args.dir)}")
    results = args.allure_results or args.dir / "allure-results"
    if args.allure_results and not results.is_dir():
        raise UsageError(f"no Allure results directory {results}")
    rendered = render_allure(results, args.dir / "allure-report")
    print(rendered.message if rendered.ok else f"Allure HTML not rendered: {rendered.message}")
    return 0


def series_from_log(experiment: dict, report_dir: Path) -> dict | None:
    """A run killed before its report was written has a request log and no series: measure
    it from the log, as the run would have (the reports only draw)."""
    from inferchaos.load.records import read_log
    from inferchaos.probes.requests import run_series
    from inferchaos.reports.writer import run_dir_of

    log = Path(experiment.get("request_log") or run_dir_of(experiment, report_dir) / "requests.jsonl")
    if "clock" not in experiment or not log.is_file():
        return None
    t0 = experiment["clock"]["t0_monotonic"]
    return run_series(read_log(log), t0, [t0 + p["end_s"] for p in experiment.get("phases", [])]).to_dict()


def cmd_inventory(args: argparse.Namespace) -> int:
    from inferchaos.targets.inventory.command import run

    return run(args)



VERBS = {"report": cmd_report, "inventory": cmd_inventory}
