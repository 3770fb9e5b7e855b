"""Peak RSS of the runner: the pytest process that runs the experiments (VmHWM from
/proc/self/status, read by bench/runner_rss_plugin.py at the end of its session and after
each test), for one experiment and for all of them.

    python bench/runner_memory.py [--one experiments/test_replica_crash.py] [--full] [--skip-all]

Default: the one experiment with the default phases, then all of `experiments/` with short
phases (baseline 1 s, hold 3 s, recovery 3 s: about 2 min on 2 cores); `--full` runs all
with the default phases (about 3.5 min). Each run starts its own local cluster, as
`pytest experiments/` does; only the runner is measured (locust and the cluster are other
processes). Prints numbers; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from experiments_wall import pytest_argv, run  # noqa: E402


def measure(paths: list[str], short: bool, tmp: Path, label: str) -> None:
    slug = "".join(ch if ch.isalnum() else "-" for ch in label.split(" (")[0])
    report, rss = tmp / f"{slug}-report", tmp / f"{slug}-rss.json"
    argv = pytest_argv(report, short, [], paths)
    print(f"\n{label}: " + " ".join(shlex.quote(x) for x in argv).replace(str(tmp), "$TMP"), flush=True)
    proc, wall = run(argv, rss)
    last = (proc.stdout.strip().splitlines() or ["(no output)"])[-1]
    print(f"  {wall:.1f} s wall, exit code {proc.returncode}: {last}")
    if not rss.is_file():
        print("  no RSS figure (the run did not reach its end):\n" + proc.stdout[-2000:] + proc.stderr[-2000:])
        return
    m = json.loads(rss.read_text())
    requests = 0
    if (report / "summary.json").is_file():
        requests = sum(e.get("requests") or 0 for e in json.loads((report / "summary.json").read_text())["experiments"])
    print(f"  runner peak RSS (VmHWM) {m['vmhwm_kb'] / 1024:.1f} MiB, RSS at the end {m['vmrss_kb'] / 1024:.1f} MiB, "
          f"{requests} requests recorded")
    for t in m["after_each_test"]:
        print(f"    after {t['test']:<60} VmHWM {t['vmhwm_kb'] / 1024:6.1f} MiB  VmRSS {t['vmrss_kb'] / 1024:6.1f} MiB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--one", default="experiments/test_replica_crash.py", help="the single experiment")
    ap.add_argument("--full", action="store_true", help="all experiments with the default phases")
    ap.add_argument("--skip-all", action="store_true", help="only the single experiment")
    a = ap.parse_args()
    print("command:", " ".join(shlex.quote(x) for x in [os.path.relpath(sys.executable)] + sys.argv))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="inferchaos-rss-") as tmp:
        measure([a.one], False, Path(tmp), "one experiment (default phases)")
        if not a.skip_all:
            measure(["experiments/"], not a.full,
                    Path(tmp), "all experiments " + ("(default phases)" if a.full else "(short phases)"))
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
