"""Stream integrity: an answer that survived a failover says what it said before the fault.

At temperature 0 a server answers the same prompt with the same text, so the baseline's
answer to each prompt is the reference. A stream resumed on another replica, replayed by a
retry, or stitched from two backends shows up as other text: tokens lost, duplicated or
reordered. Answers are compared by the sha1 the load generator kept of their text.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Iterable, Protocol

from inferchaos.probes.measure import FRACTION, Measure

MEASURES = (
    Measure("stream_integrity", ">=", "fraction", "complete answers (inject -> end) whose text equals the same "
            "prompt's baseline answer (temperature 0)", FRACTION, window="after_inject"),
)


class Record(Protocol):
    @property
    def start(self) -> float: ...
    @property
    def latency_s(self) -> float: ...
    @property
    def ok(self) -> bool: ...
    @property
    def kind(self) -> str: ...
    @property
    def prompt(self) -> int | None: ...
    @property
    def text_sha(self) -> str | None: ...


@dataclass(frozen=True)
class Integrity:
    #: complete answers judged (they had a baseline reference), and how many matched it.
    judged: int
    matched: int
    #: prompts whose baseline answers already disagreed: the server is not deterministic.
    unstable_prompts: int
    reason: str = ""

    @property
    def rate(self) -> float | None:
        return self.matched / self.judged if self.judged else None


def _family(kind: str) -> str:
    return "chat" if kind.startswith("chat") else "text"


def integrity(records: Iterable[Record], baseline: tuple[float, float], during: tuple[float, float]) -> Integrity:
    """Answers that ended inside `baseline` give each prompt its reference text; answers
    out during `during` (by overlap) are judged against it."""
    rs = [r for r in records if r.ok and r.text_sha is not None and r.prompt is not None]
    seen: dict[tuple[str, int], Counter[str]] = defaultdict(Counter)
    b0, b1 = baseline
    for r in rs:
        if b0 <= r.start and r.start + r.latency_s < b1:
            seen[(_family(r.kind), r.prompt)][r.text_sha] += 1
    unstable = sum(1 for c in seen.values() if len(c) > 1)
    reference = {k: c.most_common(1)[0][0] for k, c in seen.items() if len(c) == 1}
    d0, d1 = during
    judged = matched = 0
    for r in rs:
        if r.start < d1 and r.start + r.latency_s > d0:
            ref = reference.get((_family(r.kind), r.prompt))
            if ref is not None:
                judged += 1
                matched += ref == r.text_sha
    reason = ""
    if not judged:
        reason = ("no completion in the baseline to compare with" if not seen else
                  "the baseline's answers to the same prompt differed (not deterministic: temperature 0?)"
                  if unstable == len(seen) else "no complete answer after injection had a baseline reference")
    return Integrity(judged, matched, unstable, reason)
