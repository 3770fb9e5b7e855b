"""Which executor carries out a fault on a kind of target: (fault, target kind) -> class.

Executors register themselves with `@executes(...)` in their target's folder; every module of
the folder is imported when a fault is first built for that kind (a new executor is a new file,
listed nowhere else), so a run on the local cluster never imports the Kubernetes client, and a
fault a target has no executor for is one clear line.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, TypeVar

from inferchaos.ground.errors import NotOnTarget

T = TypeVar("T", bound=type)

#: target kind -> the packages whose import registers its executors.
PACKAGES = {
    "local": ("inferchaos.faults.local", "inferchaos.faults.endpoint"),
    "kubernetes": ("inferchaos.faults.kubernetes", "inferchaos.faults.endpoint"),
}
_EXECUTORS: dict[tuple[str, str], type] = {}


def executes(fault: str, *kinds: str) -> Callable[[T], T]:
    """Register the decorated class as `fault`'s executor on each of `kinds`."""
    def register(cls: T) -> T:
        for kind in kinds:
            if kind not in PACKAGES:
                raise ValueError(f"unknown target kind {kind!r}")
            if _EXECUTORS.get((fault, kind), cls) is not cls:
                raise ValueError(f"two executors for {fault} on {kind}: {_EXECUTORS[(fault, kind)]} and {cls}")
            _EXECUTORS[(fault, kind)] = cls
        return cls
    return register


def load(kind: str) -> None:
    for name in PACKAGES[kind]:
        package = importlib.import_module(name)
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{name}.{module.name}")


def executor_class(fault: str, kind: str) -> type:
    load(kind)
    try:
        return _EXECUTORS[(fault, kind)]
    except KeyError:
        on = kinds_of(fault)
        raise NotOnTarget(f"{fault} has no {kind} executor (it runs on: {', '.join(on) or 'no target'})") from None


def kinds_of(fault: str) -> list[str]:
    """The target kinds `fault` has an executor for (loads every kind it can)."""
    out = []
    for kind in PACKAGES:
        try:
            load(kind)
        except ImportError:  # the kubernetes extra is not installed
            continue
        if (fault, kind) in _EXECUTORS:
            out.append(kind)
    return out
