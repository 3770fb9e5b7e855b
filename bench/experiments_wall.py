"""Wall time of `pytest experiments/`: the whole run once, and each experiment's own time
from its summary.json.

    python bench/experiments_wall.py [--short] [-- PYTEST_ARGS...]

The run is the real one (`pytest experiments/`, a local cluster started for the session,
the default SLO file and phases: about 3.5 min on 2 cores). `--short` sets the phases to
baseline 1 s, hold 3 s, recovery 3 s for a quick look. Per experiment: setup (from the start
of its run: steady state, prepare, locust's start), its phases from baseline to the end of
the recovery window, and the verdict. The runner's peak RSS comes with it (see
bench/runner_rss_plugin.py). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHORT = ("baseline_s=1", "hold_s=3", "recovery_window_s=3")


def pytest_argv(report: Path, short: bool, extra: list[str], paths: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "pytest", "-p", "runner_rss_plugin", "-p", "no:cacheprovider", *paths,
            "--chaos-report", str(report), "-q"]
    for kv in SHORT if short else ():
        argv += ["--slo-set", kv]
    return argv + extra


def run(argv: list[str], rss_out: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "bench")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["INFERCHAOS_BENCH_RSS"] = str(rss_out)
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    return proc, time.monotonic() - t0


def experiment_rows(summary: dict) -> list[tuple[str, str, float, float, float, int]]:
    """(id, verdict, setup s, phases s, run s, requests) per experiment, from summary.json."""
    rows = []
    for e in summary["experiments"]:
        phases = e.get("phases") or []
        if phases:
            setup, end = phases[0]["start_s"], phases[-1]["end_s"]
            rows.append((e["id"], e["verdict"], setup, end - setup, end, e.get("requests") or 0))
        else:
            rows.append((e["id"], e["verdict"], float("nan"), float("nan"), float("nan"), e.get("requests") or 0))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", action="store_true", help="baseline 1 s, hold 3 s, recovery 3 s")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    a = ap.parse_args()
    print("command:", " ".join(shlex.quote(x) for x in [os.path.relpath(sys.executable)] + sys.argv))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="inferchaos-wall-") as tmp:
        report, rss = Path(tmp) / "report", Path(tmp) / "rss.json"
        argv = pytest_argv(report, a.short, a.pytest_args, ["experiments/"])
        print("runs:", " ".join(shlex.quote(x) for x in argv).replace(tmp, "$TMP"),
              "(PYTHONPATH=bench for the RSS plugin)", flush=True)
        proc, wall = run(argv, rss)
        last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
        print(f"\npytest experiments/: {wall:.1f} s wall ({wall / 60:.0f} min {wall % 60:02.0f} s), "
              f"exit code {proc.returncode}: {last}")
        if (report / "summary.json").is_file():
            rows = experiment_rows(json.loads((report / "summary.json").read_text()))
            print(f"\n{'experiment':<32} {'verdict':<8} {'setup s':>8} {'phases s':>9} {'run s':>7} {'requests':>9}")
            for r in rows:
                print(f"{r[0]:<32} {r[1]:<8} {r[2]:8.1f} {r[3]:9.1f} {r[4]:7.1f} {r[5]:9d}")
            runs = sum(r[4] for r in rows)
            print(f"{len(rows)} experiments: {runs:.1f} s inside their runs, {wall - runs:.1f} s else "
                  "(pytest start, the session's cluster, verdicts and report files)")
        else:
            print(proc.stdout[-3000:] + proc.stderr[-3000:])
        if rss.is_file():
            m = json.loads(rss.read_text())
            print(f"runner peak RSS (VmHWM): {m['vmhwm_kb'] / 1024:.1f} MiB")
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
