"""False alarms: `pytest experiments/` N times on a healthy cluster, and how close each
objective came to failing.

    python bench/false_alarms.py [--runs 3] [-- PYTEST_ARGS...]

A gate that fails a clean run is switched off within a week; one that passes anything
catches nothing. This runs the whole catalogue N times (the default SLO file and phases,
a fresh local cluster each run) and prints, per run, the exit code and the tests that
failed unexpectedly (an xfail that failed as expected is not a false alarm); then, per
experiment, the verdict of each run and, per objective, the observed values and the
headroom left in the worst run:

    <= objectives: 1 - observed / bound          (0.75: used a quarter of the bound)
    >= fractions:  (observed - bound) / (1 - bound)  (the share of the error budget left)
    other >=:      observed / bound - 1

A negative headroom is a breach. Relative objectives are shown with the bound they were
resolved to in that run. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BOUND = re.compile(r"^(<=|>=)\s*([-+0-9.eE]+)(\s*[A-Za-z/]*)")


def headroom(objective: str, observed: float | None) -> float | None:
    """How far from failing; None when the objective's bound cannot be read or nothing was observed."""
    m = BOUND.match(objective)
    if m is None or observed is None:
        return None
    op, bound, unit = m.group(1), float(m.group(2)), m.group(3).strip()
    if op == "<=":
        return 1 - observed / bound if bound else (0.0 if observed <= 0 else -1.0)
    if not unit and 0 < bound < 1:  # a fraction: what is left of the error budget
        return (observed - bound) / (1 - bound)
    return observed / bound - 1 if bound else None


def false_failures(junit: Path) -> list[str]:
    """Tests that failed or errored (a strict xfail that passed is one too)."""
    if not junit.is_file():
        return ["(no JUnit file: the run did not finish)"]
    out = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            out.append(case.get("name", "?"))
    return out


def run_once(i: int, tmp: Path, extra: list[str]) -> tuple[int, float, dict, list[str]]:
    report = tmp / f"run{i}"
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "experiments/", "-q",
            "--chaos-report", str(report), "--junitxml", str(report / "junit.xml"), *extra]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    t0 = time.monotonic()
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    summary = json.loads((report / "summary.json").read_text()) if (report / "summary.json").is_file() else {}
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    bad = false_failures(report / "junit.xml")
    print(f"run {i}: exit {proc.returncode} in {wall:.0f} s: {last}; false failures: {', '.join(bad) or 'none'}",
          flush=True)
    return proc.returncode, wall, summary, bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="how many times to run the catalogue (default 3)")
    ap.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    a = ap.parse_args()
    if a.runs < 1:
        print("false_alarms: --runs must be 1 or more", file=sys.stderr)
        return 2
    print("command:", " ".join(shlex.quote(x) for x in [os.path.relpath(sys.executable)] + sys.argv))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    verdicts: dict[str, list[str]] = defaultdict(list)
    values: dict[tuple[str, str], list[tuple[float | None, float | None, str]]] = defaultdict(list)
    alarms = 0
    with tempfile.TemporaryDirectory(prefix="inferchaos-alarms-") as tmp:
        for i in range(1, a.runs + 1):
            _, _, summary, bad = run_once(i, Path(tmp), a.pytest_args)
            alarms += len(bad)
            for e in summary.get("experiments", []):
                verdicts[e["id"]].append(e["verdict"])
                for s in e.get("slos", []):
                    values[(e["id"], s["name"])].append((s.get("observed"), headroom(s["objective"], s.get("observed")),
                                                         s["objective"]))
    print(f"\n{a.runs} runs, {alarms} false failures in all\n")
    print(f"{'experiment':<30} {'verdicts':<24} {'objective':<22} {'worst headroom':>14}  observed (each run)")
    for eid in sorted(verdicts):
        first = True
        for (e, name), seen in sorted(values.items()):
            if e != eid:
                continue
            rooms = [h for _, h, _ in seen if h is not None]
            worst = f"{min(rooms):14.0%}" if rooms else f"{'-':>14}"
            obs = ", ".join("-" if v is None else f"{v:.4g}" for v, _, _ in seen)
            print(f"{eid if first else '':<30} {(' '.join(verdicts[eid]) if first else ''):<24} {name:<22} {worst}  "
                  f"{obs}  [{seen[-1][2]}]")
            first = False
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
