"""`inferchaos watch --target kubernetes`: a namespace during a game day, as the cluster shows it.

What is read, each refresh: the pods the selector picks and how many their Deployments ask
for, the data plane's view of them (the Service's EndpointSlices: which pods it routes to,
which are terminating), and the faults still applied -- from every run's ledger in the
namespace (whoever applied them, from wherever) and from the local ledger. Requests/s and
p99 need a metrics source the API server does not have (Prometheus or the pods' /metrics):
for those, `inferchaos load` prints what its load sees.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from inferchaos.faults.cluster_ledger import entries_of
from inferchaos.faults.ledger import Entry, Ledger, open_of


@dataclass(frozen=True)
class KubeSnapshot:
    wall: float
    ready: int
    desired: int
    #: (pod, what the LB view says of it: running = routed to, else why not)
    lb: list[tuple[str, str]]
    faults: list[Entry] = field(default_factory=list)


def take(target: Any, ledger: Ledger) -> KubeSnapshot:
    from inferchaos.targets.kubernetes import runledger

    pods = target.replicas()
    seen: dict[str, Entry] = {e.id: e for e in ledger.open_entries()}
    for run in runledger.ledgers(target.connection, target.namespace):
        seen.update({e.id: e for e in open_of(entries_of(run.lines))})
    lb = sorted((s.name, s.state) for s in target.servers() if s.name in {p.name for p in pods})
    return KubeSnapshot(time.time(), sum(p.phase == "ready" for p in pods), target.desired_replicas(), lb,
                        sorted(seen.values(), key=lambda e: e.wall))


def line(s: KubeSnapshot) -> str:
    lb = ",".join(f"{n}:{st}" for n, st in s.lb) or "-"
    faults = ",".join(f"{e.fault}:{e.id}({e.operator or '?'})" for e in s.faults) or "none"
    return f"{time.strftime('%H:%M:%S', time.localtime(s.wall))} ready={s.ready}/{s.desired} lb={lb} faults={faults}"


def frame(s: KubeSnapshot, where: str) -> list[str]:
    out = [f"inferchaos watch  {where}  {time.strftime('%H:%M:%S', time.localtime(s.wall))}  (Ctrl-C stops)",
           f"  pods       {s.ready}/{s.desired} ready",
           "  LB         " + ("  ".join(f"{n} {st}" for n, st in s.lb) or "-")]
    if not s.faults:
        out.append("  faults     none applied")
    for i, e in enumerate(s.faults):
        out.append(("  faults     " if i == 0 else "             ") + f"{e.fault} {e.id} by {e.operator or '?'} "
                   f"({s.wall - e.wall:.0f}s ago)  -> inferchaos revert {e.id}")
    return out


def watch(target: Any, ledger: Ledger, interval_s: float, once: bool, tty: bool, write: Callable[[str], None],
          running: Callable[[], bool] = lambda: True) -> int:
    where, drawn = target.describe(), 0
    while running():
        snap = take(target, ledger)
        if tty:
            lines = frame(snap, where)
            write((f"\x1b[{drawn}F\x1b[J" if drawn else "") + "\n".join(lines) + "\n")
            drawn = len(lines)
        else:
            write(line(snap) + "\n")
        if once:
            return 0
        time.sleep(interval_s)
    return 0
