"""The fault catalogue: every spec in faults/specs/, by name — what `inferchaos faults`,
`plan`, `inject`, the pytest markers and the bad-input table read.

A fault is in the catalogue by having a spec file; nothing else lists it.
"""

from __future__ import annotations

import importlib
import pkgutil

from inferchaos.ground.errors import UsageError
from inferchaos.faults import specs
from inferchaos.faults.spec import FaultSpec, suggest


def _discover() -> dict[str, FaultSpec]:
    found = {}
    for info in sorted(pkgutil.iter_modules(specs.__path__), key=lambda m: m.name):
        spec = getattr(importlib.import_module(f"{specs.__name__}.{info.name}"), info.name, None)
        if not isinstance(spec, FaultSpec) or spec.name != info.name:
            raise RuntimeError(f"faults/specs/{info.name}.py must define {info.name} = FaultSpec({info.name!r}, ...)")
        found[spec.name] = spec
    return found


CATALOGUE: dict[str, FaultSpec] = _discover()


def lookup(fault_id: str) -> FaultSpec:
    try:
        return CATALOGUE[fault_id]
    except KeyError:
        raise UsageError(f"unknown fault {fault_id!r}{suggest(fault_id, list(CATALOGUE))}; "
                         f"known: {', '.join(CATALOGUE)} (`inferchaos faults` describes them)") from None


def fault_sets(pairs: list[str], kind: str) -> dict[str, dict]:
    """`--fault-set spot_reclamation.notice_s=120` (repeatable) → {"spot_reclamation":
    {"notice_s": 120.0}}: a fault's parameters for every experiment of it, over what the
    experiment gives. Checked here for the target kind, one line per mistake, so a value the
    target cannot honour stops the session before anything runs."""
    out: dict[str, dict] = {}
    for raw in pairs:
        name, dot, rest = raw.partition(".")
        if not dot or "=" not in rest:
            raise UsageError(f"--fault-set {raw!r}: expected FAULT.KEY=VALUE, e.g. spot_reclamation.notice_s=120")
        spec = lookup(name.strip())
        given = spec.parse([rest])
        if set(given) & set(out.get(spec.name, {})):
            raise UsageError(f"--fault-set {raw!r}: {spec.name}.{next(iter(given))} given twice")
        for key in given:
            spec.honoured(key, kind)
        out.setdefault(spec.name, {}).update(given)
    return out
