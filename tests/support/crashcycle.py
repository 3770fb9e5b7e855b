"""One crash-safety cycle: run a real experiment, SIGKILL its runner at a chosen moment,
run `inferchaos recover`, and say whether the cluster is exactly as it was before.

Shared by tests/cluster/test_crash_safety.py (one kill per fault in CI) and
bench/crash_campaign.py (many kills, a table). A cycle never asserts: it returns an
`Outcome` listing what is not restored, so the bench can count and the test can fail
with every problem and the seed that replays it.

The moment of the kill: the runner prints a line as each stage of its experiment starts
(`  inferchaos: <experiment>: plan: ...` before prepare, then `baseline for 1s`, `inject`,
`hold for 3s`, `revert`, `recovery for 2s`). A `Kill` names the stage whose line triggers
it and how far into that stage to strike (a fraction of its planned length). Only the
runner's own process is killed (`os.kill`, not its group), as a real crash would: locust,
the GPU hog and whatever else it started live on in their own sessions.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from inferchaos.faults.ledger import Ledger
from inferchaos.targets.local import LocalCluster
from inferchaos.targets.local.processes import end_groups, start_time, stopped
from tests.support.faultcases import BUILDERS, PLANTED, repo_env, snapshot
from tests.support.leftovers import processes_mentioning
from tests.support.phases import short
from tests.support.inner import PYTEST

REPO = Path(__file__).resolve().parents[2]
FAULTS = tuple(sorted(BUILDERS))
#: the stages a kill can be aimed at, in the order the runner goes through them
PHASES = ("prepare", "baseline", "inject", "hold", "revert", "recovery")
SHORT = short()
#: how long a stage without a planned length is taken to last, to place a kill inside it:
#: prepare (the fault's prepare and locust's start) takes about half a second here; inject
#: and revert are actions of a few milliseconds, so a kill there strikes at once or nearly.
UNTIMED_S = {"prepare": 0.5, "inject": 0.02, "revert": 0.02}
#: -k selectors of every parametrisation, the first being the one CI kills (as PLANTED)
VARIANTS: dict[str, tuple[str, ...]] = {
    "gpu_oom": ("sudden", "gradual"),
    "model_load_stall": ("cold", "warm_pool"),
    "pipeline_lag": ("stop", "slow_reads"),
}
STAGE = re.compile(r"inferchaos: (?P<exp>\S+): (?:(?P<plan>plan): |(?P<phase>baseline|inject|hold|revert|recovery)"
                   r"(?: for (?P<secs>[0-9.]+)s)?\s*$)")
RESTORE_TIMEOUT_S = 45.0


@dataclass(frozen=True)
class Kill:
    fault: str
    phase: str  # the stage whose start line triggers the kill
    fraction: float  # how far into that stage: 0 at its start, 1 at its planned end
    select: str  # pytest -k: one parametrisation of the fault's experiment

    @property
    def experiment(self) -> str:
        return f"experiments/{PLANTED[self.fault].experiment}"

    def label(self) -> str:
        return f"{self.fault}[{self.select}] in {self.phase} at {self.fraction:.0%}"


@dataclass
class Outcome:
    kill: Kill
    killed: bool = False  # False: the runner had exited before the kill
    killed_in: str = "startup"  # the last stage the runner announced before it died
    killed_after_s: float | None = None  # seconds from that stage's line to the kill
    recover_s: float | None = None  # wall time of `inferchaos recover`
    restored_s: float | None = None  # from recover's start until the snapshot matched
    problems: list[str] = field(default_factory=list)
    runner_output: str = ""
    recover_output: str = ""
    cleaned: list[str] = field(default_factory=list)  # what the safety net ended after a failure

    @property
    def restored(self) -> bool:
        return not self.problems

    def report(self) -> str:
        lines = [f"{self.kill.label()}: killed in {self.killed_in}"
                 f"{'' if self.killed else ' (NOT killed: the run had ended)'}"]
        lines += [f"  - {p}" for p in self.problems]
        tail = self.runner_output.strip().splitlines()[-25:]
        lines += ["  runner output (tail):"] + [f"    {t}" for t in tail]
        lines += ["  recover output:"] + [f"    {t}" for t in self.recover_output.strip().splitlines()]
        if self.cleaned:
            lines += ["  left behind, ended by the test afterwards:"] + [f"    {c}" for c in self.cleaned]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- planning
def plan_kills(seed: int, n: int, faults: Iterable[str] = FAULTS, variants: bool = False,
               phases: Iterable[str] = PHASES) -> list[Kill]:
    """`n` kills: faults in shuffled rounds (every fault once per round) and stages from
    shuffled cycles of PHASES, so one round of the catalogue hits every stage at least once.
    The same seed gives the same kills."""
    rng = random.Random(seed)
    faults, phases = list(faults), list(phases)
    kills: list[Kill] = []
    stages: list[str] = []
    used: dict[str, int] = {}
    while len(kills) < n:
        round_ = faults[:]
        rng.shuffle(round_)
        for fault in round_[: n - len(kills)]:
            if not stages:
                stages = list(phases)
                rng.shuffle(stages)
            choices = VARIANTS.get(fault, (PLANTED[fault].select,)) if variants else (PLANTED[fault].select,)
            select = choices[used.get(fault, 0) % len(choices)]
            used[fault] = used.get(fault, 0) + 1
            kills.append(Kill(fault, stages.pop(), round(rng.random(), 3), select))
    return kills


# ----------------------------------------------------------------------------- processes
def _proc_table() -> dict[int, tuple[int, int, int, str]]:
    """pid -> (ppid, pgid, start time, state) of every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        f = stat[stat.rfind(b")") + 2:].split()
        if f[0] != b"Z":
            table[int(entry)] = (int(f[1]), int(f[2]), int(f[19]), f[0].decode())
    return table


def descendants(pid: int) -> list[tuple[int, int]]:
    """(pid, start time) of every live process below `pid`."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for p, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(p)
    found, todo = [], list(children.get(pid, []))
    while todo:
        p = todo.pop()
        found.append((p, table[p][2]))
        todo += children.get(p, [])
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def survivors(procs: list[tuple[int, int]]) -> list[str]:
    """Those of `procs` (pid, start time) still alive, as "pid: cmdline"."""
    return [f"{p}: {cmdline(p)}" for p, started in procs if start_time(p) == started and not _zombie(p)]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] == b"Z"
    except OSError:
        return True


def strays(cluster: LocalCluster) -> list[str]:
    """Live processes aimed at this cluster (its LB URL or its state dir on their command
    line) that are not the cluster's own: a load generator, a hog, a runner."""
    own = set(cluster.state.pgids())
    state_dir = str(Path(cluster.state_dir).resolve())
    found = processes_mentioning(f"--host {cluster.lb_url}") + processes_mentioning(state_dir)
    table = _proc_table()
    out = []
    for line in dict.fromkeys(found):
        pid = int(line.split(":", 1)[0])
        if pid in table and table[pid][1] not in own:
            out.append(line)
    return out


def stopped_in_cluster(cluster: LocalCluster) -> list[str]:
    own = set(cluster.state.pgids())
    return [f"{p}: {cmdline(p)}" for p, (_pp, pgid, _st, state) in _proc_table().items()
            if pgid in own and state in ("T", "t")]


# ----------------------------------------------------------------------------- the cycle
def runner_argv(kill: Kill, cluster: LocalCluster, work: Path) -> list[str]:
    argv = [*PYTEST, kill.experiment, "-k", kill.select, "--state-dir", str(cluster.state_dir),
            "--ledger", str(work / "ledger.jsonl"), "--chaos-report", str(work / "report")]
    for kv in SHORT:
        argv += ["--slo-set", kv]
    return argv


def recover(ledger: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferchaos.cli", "recover", "--ledger", str(ledger), *extra],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=repo_env())


class _Reader(threading.Thread):
    """Reads the runner's output; signals when the trigger stage starts."""

    def __init__(self, stream, phase: str) -> None:  # type: ignore[no-untyped-def]
        super().__init__(daemon=True)
        self.stream, self.phase = stream, phase
        self.lines: list[str] = []
        self.stages: list[str] = []
        self.hit = threading.Event()
        self.hit_at = 0.0
        self.hit_secs: float | None = None

    def run(self) -> None:
        for line in self.stream:
            self.lines.append(line.rstrip("\n"))
            m = STAGE.search(line)
            if not m:
                continue
            stage = "prepare" if m.group("plan") else m.group("phase")
            self.stages.append(stage)
            if stage == self.phase and not self.hit.is_set():
                self.hit_at = time.monotonic()
                self.hit_secs = float(m.group("secs")) if m.group("secs") else None
                self.hit.set()
        self.hit.set()  # EOF: the runner is gone, whether or not the stage came


def run_cycle(cluster: LocalCluster, kill: Kill, work: Path, do_recover: bool = True,
              timeout_s: float = 120.0) -> Outcome:
    """Run, kill, recover, compare. `do_recover=False` skips the recover (to show that
    the checks see what a crash leaves behind); the caller must then clean up."""
    work.mkdir(parents=True, exist_ok=True)
    out = Outcome(kill)
    ledger_path = work / "ledger.jsonl"
    before = snapshot(cluster)
    runner = subprocess.Popen(runner_argv(kill, cluster, work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, text=True, cwd=REPO, env=repo_env(), start_new_session=True)
    reader = _Reader(runner.stdout, kill.phase)
    reader.start()
    below: list[tuple[int, int]] = []
    try:
        if not reader.hit.wait(timeout_s):
            out.problems.append(f"the runner did not reach {kill.phase} within {timeout_s:g}s")
        if kill.phase not in reader.stages:
            out.problems.append(f"the runner never announced {kill.phase}: the campaign could not aim its kill")
        length = reader.hit_secs if reader.hit_secs is not None else UNTIMED_S.get(kill.phase, 0.0)
        strike = reader.hit_at + kill.fraction * length
        while runner.poll() is None and time.monotonic() < strike:
            time.sleep(min(0.005, max(0.0, strike - time.monotonic())))  # the chosen moment, not a sync
        below[:] = descendants(runner.pid)
        if runner.poll() is None:
            os.kill(runner.pid, signal.SIGKILL)  # the runner only: what it started lives on, as in a real crash
        rc = runner.wait(30)
        out.killed = rc == -signal.SIGKILL
        out.killed_after_s = round(time.monotonic() - reader.hit_at, 3) if kill.phase in reader.stages else None
        reader.join(5)
        out.runner_output = "\n".join(reader.lines)
        out.killed_in = reader.stages[-1] if reader.stages else "startup"
        if not out.killed:
            out.killed_in = f"{out.killed_in} (ended, rc {rc})"
        if not do_recover:
            _check(cluster, out, ledger_path, below, before, restore_timeout_s=0.0)
            return out
        t0 = time.monotonic()
        res = recover(ledger_path)
        out.recover_s = round(time.monotonic() - t0, 2)
        out.recover_output = (res.stdout + res.stderr).strip()
        if res.returncode != 0:
            out.problems.append(f"inferchaos recover exited {res.returncode}")
        _check(cluster, out, ledger_path, below, before, restore_timeout_s=RESTORE_TIMEOUT_S, t0=t0)
        return out
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
        if do_recover and Ledger(ledger_path).open_entries():
            recover(ledger_path, "--force")  # leave the next cycle a clean ledger, whatever failed
        if do_recover and out.problems:
            out.cleaned = clean_up_after(cluster, below)


def _check(cluster: LocalCluster, out: Outcome, ledger_path: Path, below: list[tuple[int, int]], before: dict,
           restore_timeout_s: float, t0: float | None = None) -> None:
    still_open = Ledger(ledger_path).open_entries()
    if still_open:
        out.problems.append("ledger entries still open: " + ", ".join(f"{e.fault} {e.id}" for e in still_open))
    # What the runner started must go (recover ends it; give a SIGTERMed locust its shutdown).
    deadline = time.monotonic() + (10.0 if restore_timeout_s else 0.0)
    while survivors(below) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = survivors(below)
    if left:
        out.problems.append(f"processes the runner started still alive: {left}")
    stray = strays(cluster)
    if stray:
        out.problems.append(f"processes aimed at the cluster still alive: {stray}")
    frozen = stopped_in_cluster(cluster) + [s for s in left if stopped(int(s.split(":", 1)[0]))]
    if frozen:
        out.problems.append(f"processes still SIGSTOPped: {frozen}")
    if not restore_timeout_s:
        return  # not recovered: the cluster may never get steady again, so no snapshot
    # The cluster itself: the same snapshot the catalogue compares after a revert, taken
    # once it is steady again (a replacement's cold start, HAProxy's rise).
    deadline = time.monotonic() + restore_timeout_s
    before = placement_free(before)
    now: dict = {}
    while True:
        why = cluster.unsteady()
        if why is None:
            try:
                now = placement_free(snapshot(cluster))
            except Exception as exc:  # noqa: BLE001 - reported, with the rest
                now = {"error": f"{type(exc).__name__}: {exc}"}
            if now == before:
                if t0 is not None:
                    out.restored_s = round(time.monotonic() - t0, 2)
                return
        if time.monotonic() >= deadline:
            if why is not None:
                out.problems.append(f"cluster not steady {restore_timeout_s:g}s after recover: {why}")
            else:
                diff = {k: (before.get(k), now.get(k)) for k in sorted(set(before) | set(now))
                        if before.get(k) != now.get(k)}
                out.problems.append(f"cluster not as before {restore_timeout_s:g}s after recover "
                                    f"(key: before, now): {diff}")
            return
        time.sleep(0.25)


def placement_free(snap: dict) -> dict:
    """The snapshot with device memory as the sorted usage of the replicas' devices, not
    keyed by device: a warm-pool replica promoted into a slot keeps serving from its own
    device, so after a run with a warm pool (crashed or not) the replicas can sit on other
    devices than before. Which device holds a replica is the supervisor's choice, not
    something a revert restores; what each holds still is."""
    if not isinstance(snap.get("memory"), dict):
        return snap
    return {**snap, "memory": sorted(snap["memory"].values())}


def clean_up_after(cluster: LocalCluster, below: list[tuple[int, int]]) -> list[str]:
    """After a cycle that did not restore: end what the runner left (verified by pid and
    start time) and what is aimed at the cluster, and resume stopped cluster processes, so
    the next cycle starts from a cluster that can get steady. Returns what it ended."""
    table = _proc_table()
    groups = {table[p][1] for p, started in below if p in table and table[p][2] == started}
    own = set(cluster.state.pgids())
    for line in strays(cluster):
        pid = int(line.split(":", 1)[0])
        if pid in table:
            groups.add(table[pid][1])
    groups -= own | {os.getpgrp()}
    ended = [f"group {g}: {cmdline(g)}" for g in sorted(groups)]
    end_groups(groups, grace_s=2.0)
    for p, (_pp, pgid, _st, state) in _proc_table().items():
        if pgid in own and state in ("T", "t"):
            os.kill(p, signal.SIGCONT)
    return ended
