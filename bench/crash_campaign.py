"""Crash campaign: SIGKILL the experiment runner many times, across faults and stages,
run `inferchaos recover` after each kill, and count how often the cluster is exactly as
before (the cycle of tests/cluster/test_crash_safety.py, many times over).

    python bench/crash_campaign.py [--kills 30] [--seed N] [--variants] [--faults gpu_oom,replica_hang]
                                   [--stages inject,revert]

Each kill: a real `pytest -p inferchaos.plugin experiments/test_<fault>.py -k <case>` against
one local cluster, killed (its own process only) at a seeded moment in one stage: prepare,
baseline, inject, hold, revert, recovery. `--variants` rotates through every parametrisation
of an experiment (gpu_oom gradual, model_load_stall warm_pool, pipeline_lag slow_reads).
Prints one row per kill, then "restored X/N" by stage and by fault, and what was left
behind when a kill was not restored. The same seed aims the same kills (the moment within
a stage also depends on the machine's timing).
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inferchaos.targets.local import ClusterSpec, LocalCluster  # noqa: E402
from tests.support.crashcycle import FAULTS, PHASES, Outcome, plan_kills, run_cycle  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=len(FAULTS), help="kills in all (default: one per fault)")
    ap.add_argument("--seed", type=int, default=None, help="default: a random one, printed")
    ap.add_argument("--variants", action="store_true", help="rotate through every parametrisation")
    ap.add_argument("--faults", default=",".join(FAULTS), help="comma-separated fault ids")
    ap.add_argument("--stages", default=",".join(PHASES), help="comma-separated stages to aim kills at")
    a = ap.parse_args()
    faults = [f for f in a.faults.split(",") if f]
    stages = [s for s in a.stages.split(",") if s]
    unknown = sorted(set(faults) - set(FAULTS)) + sorted(set(stages) - set(PHASES))
    if unknown or a.kills < 1:
        print(f"crash_campaign: error: unknown fault(s) or stage(s) {unknown}" if unknown else "--kills must be >= 1",
              file=sys.stderr)
        return 2
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1_000_000)
    kills = plan_kills(seed, a.kills, faults, variants=a.variants, phases=stages)

    argv = [os.path.relpath(sys.executable)] + sys.argv + ([] if a.seed is not None else ["--seed", str(seed)])
    print("command:", " ".join(shlex.quote(x) for x in argv))
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at start")
    print(f"seed {seed}: {len(kills)} kills over {len(faults)} faults, stages {', '.join(stages)}")
    outcomes: list[Outcome] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="inferchaos-crash-") as tmp:
        spec = ClusterSpec(replicas=3, provisioning_delay_s=0.5)
        with LocalCluster(spec, Path(tmp) / "cluster", owner_pid=os.getpid()) as cluster:
            print(f"{'#':>3}  {'fault':<28} {'aimed at':<14} {'killed in':<10} {'restored':<8} "
                  f"{'recover s':>9} {'restored s':>10}")
            for i, kill in enumerate(kills, 1):
                out = run_cycle(cluster, kill, Path(tmp) / f"kill{i:03d}")
                outcomes.append(out)
                aimed = f"{kill.phase} {kill.fraction:.0%}"
                print(f"{i:>3}  {kill.fault + '[' + kill.select + ']':<28} {aimed:<14} {out.killed_in:<10} "
                      f"{'yes' if out.restored else 'NO':<8} {_num(out.recover_s):>9} {_num(out.restored_s):>10}",
                      flush=True)
    wall = time.monotonic() - started

    n, ok = len(outcomes), sum(o.restored for o in outcomes)
    print(f"\nrestored {ok}/{n}  (seed {seed}, {wall:.0f} s wall, load average {os.getloadavg()[0]:.2f} at end)")
    _breakdown("by stage killed in", outcomes, lambda o: o.killed_in, list(PHASES))
    _breakdown("by fault", outcomes, lambda o: o.kill.fault, faults)
    recs = sorted(o.recover_s for o in outcomes if o.recover_s is not None)
    if recs:
        print(f"recover: median {recs[len(recs) // 2]:.2f} s, max {recs[-1]:.2f} s")
    not_killed = [o for o in outcomes if not o.killed]
    if not_killed:
        print(f"{len(not_killed)} run(s) had ended before their kill (counted, not crashes)")
    for i, o in enumerate(outcomes, 1):
        if not o.restored:
            print(f"\n--- kill {i} NOT restored: {o.kill.label()}, killed in {o.killed_in}")
            for p in o.problems:
                print(f"  - {p}")
            for c in o.cleaned:
                print(f"  ended afterwards by the campaign: {c}")
    return 0 if ok == n else 1


def _breakdown(title: str, outcomes: list[Outcome], key, order: list[str]) -> None:  # type: ignore[no-untyped-def]
    groups: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        groups[key(o)].append(o)
    names = [k for k in order if k in groups] + sorted(k for k in groups if k not in order)
    print(f"{title}: " + ", ".join(f"{k} {sum(o.restored for o in groups[k])}/{len(groups[k])}" for k in names))


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


if __name__ == "__main__":
    sys.exit(main())
