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
