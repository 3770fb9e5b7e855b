"""Did the load balancer fail over gracefully? Measured from LB samples and the request log.

For each replica a fault removed, three times on the run's clock:
- `failover_s`: from the replica's death until the LB stopped routing to it (0 when the
  LB had already taken it out during the notice, which is the graceful case);
- the requests that failed between its death and its ejection, and those the LB still
  sent it that it answered (a hung replica answers them late, once resumed);
- `replacement_traffic_s`: from its death until its replacement served a valid answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Protocol, Sequence

from inferchaos.probes.lb_sampler import LbSample, LbSampler
from inferchaos.probes.measure import Measure
from inferchaos.probes.probe import BaseProbe, Measurement, RunView
from inferchaos.targets.capabilities import LB_SLOTS


class Record(Protocol):
    start: float
    ok: bool
    replica: str | None


@dataclass(frozen=True)
class Failover:
    replica: str
    port: int
    server: str | None
    died_at: float
    ejected_at: float | None
    failover_s: float | None
    failed_before_ejection: int
    served_after_death: int
    replacement: str | None
    replacement_traffic_s: float | None

    def summary(self) -> str:
        fo = f"{self.failover_s:.2f}s" if self.failover_s is not None else "never"
        rt = f"{self.replacement_traffic_s:.2f}s" if self.replacement_traffic_s is not None else "not seen"
        return (f"{self.replica}: LB stopped routing to it {fo} after its death; "
                f"{self.failed_before_ejection} requests failed meanwhile; replacement "
                f"{self.replacement or '-'} took traffic after {rt}")


def ejected_at(samples: Sequence[LbSample], port: int, since: float) -> tuple[str | None, float | None]:
    """When the LB took the server that pointed at `port` out of rotation, for the first
    time at or after `since` (the start of that out-of-rotation period, which may lie
    before `since` when it was ejected during a notice). A replica that comes back later
    (a hung one, resumed) keeps its ejection time. Returns (server name, time or None)."""
    mine = [s for s in samples if s.port == port]
    if not mine:
        return None, None
    server = mine[0].server
    # Walk the samples of that server (its port may be re-pointed to a replacement).
    out_since: float | None = None
    for s in (s for s in samples if s.server == server):
        if s.up and s.port == port:
            out_since = None
            continue
        if out_since is None:
            out_since = s.t
        if s.t >= since:
            return server, out_since
    return server, None


def analyse(replica: str, port: int, died_at: float, samples: Sequence[LbSample], records: Iterable[Record],
            replacement: str | None) -> Failover:
    records = list(records)
    server, out = ejected_at(samples, port, died_at)
    failover = None if out is None else max(0.0, out - died_at)
    failed_before = sum(1 for r in records
                        if not r.ok and died_at <= r.start < (out if out is not None else float("inf")))
    served_after = sum(1 for r in records if r.replica == replica and r.ok
                       and died_at < r.start < (out if out is not None else float("inf")))
    first = min((r.start for r in records if replacement and r.replica == replacement and r.ok and r.start >= died_at),
                default=None)
    return Failover(
        replica=replica, port=port, server=server, died_at=died_at, ejected_at=out, failover_s=failover,
        failed_before_ejection=failed_before, served_after_death=served_after, replacement=replacement,
        replacement_traffic_s=None if first is None else first - died_at,
    )


# ---------------------------------------------------------------------- as a probe
@dataclass(frozen=True)
class Failovers:
    """One Failover per replica the fault removed, and the LB samples they were read from."""

    results: tuple[Failover, ...] = ()
    samples: tuple[LbSample, ...] = ()


@dataclass
class FailoverProbe(BaseProbe):
    """The LB's view of its servers sampled every 0.1 s through the run; for each replica
    the fault removed, how long the LB kept routing to it and when its replacement served."""

    name: str = "failover"
    keys: tuple[str, ...] = ("failover_s", "replacement_s")
    measures: ClassVar[tuple[Measure, ...]] = (
        Measure("failover_s", "<=", "s", "seconds from replica death until the LB stopped routing to it"),
        Measure("replacement_s", "<=", "s", "seconds from a removed replica's death until its replacement served a "
                "valid answer"),
    )
    needs: frozenset[str] = frozenset({LB_SLOTS})
    source: Any = None
    #: the fault's (replica, monotonic time it stopped serving) pairs.
    casualties: Callable[[], list] = list
    #: every replica the target knows (replacements included), and those serving now.
    known: Callable[[], list] = list
    serving: Callable[[], list] = list
    fault_name: str = "the fault"
    samples: list[LbSample] = field(default_factory=list)
    results: list[Failover] = field(default_factory=list)

    def start(self) -> None:
        self._sampler = LbSampler(self.source).start()

    def stop(self) -> None:
        self.samples = self._sampler.stop()

    def report(self) -> Failovers:
        return Failovers(tuple(self.results), tuple(self.samples))

    def observe(self, run: RunView) -> list[Measurement]:
        everyone, serving = self.known(), self.serving()
        self.results = []
        for victim, died_at in self.casualties():
            later = sorted((r for r in everyone if r.name != victim.name and r.started_at >= victim.started_at
                            and r.slot == victim.slot), key=lambda r: r.started_at)
            promoted = [r for r in serving if r.slot == victim.slot and r.name != victim.name]
            candidates = promoted + later
            served = {r.replica for r in run.records if r.ok and r.start >= died_at}
            # a crash-looping replacement never serves; the one that did is the replacement
            replacement = next((r for r in candidates if r.name in served), candidates[0] if candidates else None)
            self.results.append(analyse(victim.name, victim.port, died_at, self.samples, run.records,
                                        replacement.name if replacement else None))
        if not self.results:
            why = f"{self.fault_name} removed no replica"
            return [Measurement("failover_s", None, why), Measurement("replacement_s", None, why)]
        values = [f.failover_s for f in self.results]
        took = [f.replacement_traffic_s for f in self.results]
        failover = None if None in values else max(v for v in values if v is not None)
        replaced = None if None in took else max(t for t in took if t is not None)
        return [Measurement("failover_s", failover,
                            None if failover is not None else "the LB never stopped routing to a removed replica"),
                Measurement("replacement_s", replaced,
                            None if replaced is not None else "no replacement served a valid answer before the run ended")]
