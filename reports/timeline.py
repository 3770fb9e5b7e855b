"""One experiment as time series: what the timeline plot draws, from the run's own data.

Built from an experiment's entry in `summary.json` alone (its `series`, phases, LB changes
and failovers, all measured by the run), so a finished run directory can be plotted again
later (`inferchaos report DIR`) without the process that ran it, and nothing here measures
anything. Every time is seconds from the run's start.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from inferchaos.ground.errors import UsageError

#: HAProxy states drawn as lanes; "starting" is the slow-start ramp, already in rotation.
LB_STATES = ("running", "starting", "stopping", "stopped", "maint")


@dataclass(frozen=True)
class Bucket:
    t: float
    requests: int
    rps: float
    errors_per_s: float
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True)
class Span:
    start: float
    end: float
    state: str


@dataclass(frozen=True)
class Mark:
    t: float
    label: str


@dataclass(frozen=True)
class Timeline:
    experiment: str
    fault: str
    verdict: str
    end: float
    buckets: list[Bucket]
    phases: list[tuple[str, float, float]]
    #: (inject, revert) seconds; None when the run never injected.
    fault_window: tuple[float, float] | None
    #: LB server -> its states over the run.
    lb: dict[str, list[Span]] = field(default_factory=dict)
    #: replica deaths, LB ejections and replacements' first answers.
    marks: list[Mark] = field(default_factory=list)


def build(experiment: dict) -> Timeline:
    """`experiment`: one entry of summary.json's `experiments`, with its `series`."""
    phases = [(p["name"], p["start_s"], p["end_s"]) for p in experiment.get("phases", [])]
    measured = experiment.get("series") or {}
    end = max([p[2] for p in phases] + [measured.get("end_s", 0.0)] + [0.0])
    buckets = buckets_of(experiment["id"], measured.get("buckets", []))
    fw = experiment.get("fault_window") or {}
    window = (fw["inject_s"], fw["revert_s"]) if fw.get("inject_s") is not None and fw.get("revert_s") else None
    return Timeline(experiment["id"], experiment["fault"], experiment["verdict"], end, buckets, phases, window,
                    lb_spans(experiment.get("lb_changes", []), end), marks(experiment))


def buckets_of(experiment: str, raw: object) -> list[Bucket]:
    """summary.json's buckets, checked: the file is read back from disk and may be anyone's."""
    names = [f.name for f in fields(Bucket)]
    ok = isinstance(raw, list) and all(
        isinstance(b, dict) and sorted(b) == sorted(names)
        and all(isinstance(b[n], (int, float)) and not isinstance(b[n], bool) or (b[n] is None and n.endswith("_ms"))
                for n in names) for b in raw)
    if not ok:
        raise UsageError(f"{experiment}: summary.json's series is not a list of buckets with {', '.join(names)}")
    return [Bucket(**b) for b in raw]  # type: ignore[union-attr]


def lb_spans(changes: list[dict], end: float) -> dict[str, list[Span]]:
    by: dict[str, list[dict]] = {}
    for c in sorted(changes, key=lambda c: c["t"]):
        by.setdefault(c["server"], []).append(c)
    out = {}
    for server, cs in sorted(by.items()):
        bounds = [c["t"] for c in cs[1:]] + [end]
        out[server] = [Span(c["t"], b, c["state"]) for c, b in zip(cs, bounds) if b > c["t"]]
    return out


def marks(experiment: dict) -> list[Mark]:
    out = []
    for f in experiment.get("failover", []):
        out.append(Mark(f["died_at"], f"{f['replica']} died"))
        if f.get("ejected_at") is not None:
            out.append(Mark(f["ejected_at"], f"LB ejected {f['server'] or f['replica']}"))
        if f.get("replacement_traffic_s") is not None and f.get("replacement"):
            out.append(Mark(round(f["died_at"] + f["replacement_traffic_s"], 3), f"{f['replacement']} serving"))
    return sorted(out, key=lambda m: m.t)
