"""A blast radius: how much of the target a fault may touch, and the refusal to touch more."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from inferchaos.ground.errors import UsageError


@dataclass(frozen=True)
class BlastRadius:
    """How much of the target a fault may touch: a count ("2") or a share ("50%")."""

    count: int | None = None
    percent: float | None = None

    @classmethod
    def parse(cls, value: str | int | float) -> BlastRadius:
        text = str(value).strip()
        m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text)
        if m:
            pct = float(m.group(1))
            if not 0 < pct <= 100:
                raise UsageError(f"blast radius {text}: a percentage must be in (0, 100]")
            return cls(percent=pct)
        if re.fullmatch(r"\d+", text) and int(text) >= 1:
            return cls(count=int(text))
        raise UsageError(f"blast radius {text!r}: give a count (e.g. 1) or a percentage (e.g. 50%)")

    def resolve(self, total: int, what: str, keep_at_least: int = 1) -> int:
        """How many of `total` to touch; refuses to exceed what may be touched."""
        n = self.count if self.count is not None else math.ceil(total * (self.percent or 0) / 100)
        limit = total - keep_at_least
        if n > limit:
            raise UsageError(
                f"blast radius {self} would touch {n} of {total} {what}; at most {max(limit, 0)} "
                f"(at least {keep_at_least} must keep serving)"
            )
        return n

    def __str__(self) -> str:
        return f"{self.percent:g}%" if self.percent is not None else str(self.count)
