"""What a fault is, independent of where it runs: its name, its parameters (type, bounds,
meaning, default, and a target's own default where the honest value differs), its blast
radius and the effect it must show.

One spec per fault (faults/specs/), one executor per target (faults/local/,
faults/kubernetes/, faults/endpoint/), found by (fault, target kind) in the registry.
Everything an operator or an experiment hands a fault is checked here, once, for every
target: a value out of bounds, a parameter the target cannot honour, a typo. The
catalogue, `inferchaos faults`, the plans and the bad-input table read the same specs, so
none of them can drift from what an executor is given.

This module imports nothing of any target: a spec says what, never how.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from inferchaos.ground.errors import UsageError
from inferchaos.faults.gpu_hog import parse_bytes
from inferchaos.faults.radius import BlastRadius

#: The target kinds an executor can be registered for (a target's `kind`).
TARGET_KINDS = ("local", "kubernetes")

#: What a `kind` accepts, for messages and the catalogue table.
KINDS = {
    "seconds": "a number of seconds >= 0",
    "ms": "a number of milliseconds >= 0",
    "number": "a number",
    "count": "a whole number >= 0",
    "radius": "a count (e.g. 1) or a share of the replicas (e.g. 50%)",
    "size": "bytes free to leave: 0, 256MiB, 1.5GB, or a share of capacity such as 2%",
    "choice": "one of",
    "bool": "true or false",
}
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True, eq=False)
class Param:
    name: str
    kind: str
    meaning: str
    default: Any = None
    choices: tuple[str, ...] = ()
    #: numbers: the value must be above this (not equal), e.g. bandwidth 0 means nothing flows.
    above: float | None = None
    #: numbers: the value must be at most this (a share: 1).
    at_most: float | None = None
    #: "inf" accepted (a stall until revert).
    allow_inf: bool = False
    #: "none" accepted: keep the cluster's own setting.
    nullable: bool = False
    #: a target's own default, where the honest value differs (a cloud's notice is not a laptop's).
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: the one target kind it means something on; None: every target the fault runs on.
    only: str | None = None

    def default_on(self, kind: str) -> Any:
        return self.defaults.get(kind, self.default)

    def accepts(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        text = f"a number above {self.above:g}" if self.above is not None else KINDS[self.kind]
        text += f", at most {self.at_most:g}" if self.at_most is not None else ""
        return text + (" or inf" if self.allow_inf else "") + (" or none" if self.nullable else "")

    def check(self, fault: str, value: Any) -> Any:
        """A value from Python (an experiment) or typed by a person: the same rules for both,
        by reading it as the person would have typed it."""
        if isinstance(value, str):
            return self.parse(fault, value)
        if value is None:
            text = "none"
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value) if not (isinstance(value, float) and math.isinf(value)) else str(value)
        else:
            raise UsageError(f"{fault}: {self.name}={value!r}: expected {self.accepts()}")
        return self.parse(fault, text)

    def parse(self, fault: str, text: str) -> Any:
        where = f"{fault}: {self.name}={text if text.isprintable() else repr(text)}"
        raw = text.strip()
        if raw.lower() in ("none", "default"):
            if self.nullable:
                return None
            raise UsageError(f"{where}: expected {self.accepts()}")
        if self.kind == "choice":
            if raw not in self.choices:
                raise UsageError(f"{where}: expected one of {', '.join(self.choices)}{suggest(raw, self.choices)}")
            return raw
        if self.kind == "bool":
            if raw.lower() in TRUE or raw.lower() in FALSE:
                return raw.lower() in TRUE
            raise UsageError(f"{where}: expected true or false")
        if self.kind in ("radius", "size"):
            try:
                self._text(raw)
            except UsageError as exc:
                raise UsageError(f"{where}: {exc}") from None
            return raw
        return self._number(where, raw)

    def _text(self, raw: str) -> None:
        if self.kind == "radius":
            BlastRadius.parse(raw)  # counts >= 1, shares in (0, 100]
            return
        m = re.fullmatch(r"(\d+(?:\.\d+)?)%", raw)
        if m and not float(m.group(1)) <= 100:
            raise UsageError("a share of capacity must be within 0%..100%")
        if not m:
            parse_bytes(raw)

    def _number(self, where: str, raw: str) -> float | int:
        try:
            value = int(raw) if self.kind == "count" else float(raw)
        except ValueError:
            raise UsageError(f"{where}: expected {self.accepts()}") from None
        if isinstance(value, float) and math.isnan(value):
            raise UsageError(f"{where}: expected {self.accepts()}")
        if isinstance(value, float) and math.isinf(value) and not (self.allow_inf and value > 0):
            raise UsageError(f"{where}: expected a finite number ({self.accepts()})")
        if self.above is not None:
            if not value > self.above:
                raise UsageError(f"{where}: must be above {self.above:g}")
        elif self.kind != "number" and value < 0:
            raise UsageError(f"{where}: must be 0 or more")
        if self.at_most is not None and not value <= self.at_most:
            raise UsageError(f"{where}: must be at most {self.at_most:g}")
        return value

    def example(self) -> str:
        return {"radius": "1", "size": "256MiB", "bool": "true",
                "choice": self.choices[0] if self.choices else "x"}.get(self.kind, "5")


class Args(Mapping[str, Any]):
    """A fault's checked parameters, as its executor reads them (`args.notice_s`): every
    parameter the target honours, with its default filled in, and nothing else."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Args({self._values!r})"


@dataclass(frozen=True, eq=False)
class FaultSpec:
    name: str
    summary: str
    #: one line for the pytest marker of the fault's experiments.
    marker: str
    #: what the fault may touch, and how that is bounded.
    blast_radius: str
    #: the effect each executor must read back from the target before the fault counts as landed.
    effect: str
    params: tuple[Param, ...] = ()
    #: why it cannot be injected outside an experiment (None: it can).
    standalone_refusal: str | None = None
    #: checks across parameters, for every target (one UsageError line).
    check: Callable[[Args], None] | None = None

    @property
    def runbook(self) -> str:
        return f"runbooks/{self.name}.md"

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def params_on(self, kind: str) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.only in (None, kind))

    def defaults(self, kind: str) -> dict[str, Any]:
        """Each parameter's default on `kind`, for the parameters that target honours."""
        return {p.name: p.default_on(kind) for p in self.params_on(kind)}

    def parse(self, pairs: Sequence[str]) -> dict[str, Any]:
        """`["notice_s=5", "replicas=2"]` → {"notice_s": 5.0, "replicas": "2"}; one line per mistake."""
        out: dict[str, Any] = {}
        for raw in pairs:
            key, sep, text = raw.partition("=")
            key = key.strip()
            if not sep or not key:
                raise UsageError(f"{self.name}: {raw!r}: parameters are KEY=VALUE, e.g. "
                                 f"{self.params[0].name}={self.params[0].example()}" if self.params
                                 else f"{self.name}: {raw!r}: this fault takes no parameters")
            self._known(key)
            if key in out:
                raise UsageError(f"{self.name}: parameter {key!r} given twice")
            out[key] = self.param(key).parse(self.name, text)
        return out

    def args(self, kind: str, given: Mapping[str, Any]) -> Args:
        """The parameters an executor on `kind` gets: each given one checked, the rest at
        that target's default. A parameter the target cannot honour is refused, never
        dropped: a plan that lists it and a run that ignores it would be a lie."""
        values = self.defaults(kind)
        for key, value in given.items():
            p = self._known(key)
            if p.only not in (None, kind):
                raise UsageError(f"{self.name}: {key} applies on the {p.only} target only, not on {kind} "
                                 f"(parameters there: {', '.join(values) or 'none'})")
            values[key] = p.check(self.name, value)
        args = Args(values)
        if self.check is not None:
            self.check(args)
        return args

    def on(self, target: Any, *, ledger: Any = None, experiment: str | None = None,
           only_on: Mapping[str, Mapping[str, Any]] | None = None, **params: Any) -> Any:
        """This fault's executor for `target`, its parameters checked (nothing is touched yet).
        `only_on={"local": {...}}` gives parameters that apply on that target kind alone: an
        experiment that runs anywhere says so instead of having them dropped elsewhere."""
        from inferchaos.faults.registry import executor_class

        kind = getattr(target, "kind", None)
        if kind not in TARGET_KINDS:
            raise UsageError(f"{self.name} needs a target (a local cluster or a Kubernetes namespace)")
        for where, extra in (only_on or {}).items():
            if where not in TARGET_KINDS:
                raise UsageError(f"{self.name}: only_on names {where!r}; target kinds: {', '.join(TARGET_KINDS)}")
            for key in extra:
                self.honoured(key, where).check(self.name, extra[key])
        given = {**params, **(only_on or {}).get(kind, {})}
        cls = executor_class(self.name, kind)
        kwargs: dict[str, Any] = {"spec": self, "target": target, "args": self.args(kind, given),
                                  "experiment": experiment}
        if ledger is not None:
            kwargs["ledger"] = ledger
        return cls(**kwargs)

    def honoured(self, key: str, kind: str) -> Param:
        """The parameter, where a `kind` target honours it; one UsageError line where not."""
        p = self._known(key)
        if p.only not in (None, kind):
            raise UsageError(f"{self.name}: {key} applies on the {p.only} target only, not on {kind}")
        return p

    def _known(self, key: str) -> Param:
        names = [p.name for p in self.params]
        if key not in names:
            known = f"parameters: {', '.join(names)}" if names else "it takes no parameters"
            close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"{self.name}: unknown parameter {key!r} ({hint}{known})")
        return self.param(key)


def suggest(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------- shared parameters
REPLICAS = Param("replicas", "radius", "blast radius: how many replicas (count) or which share (e.g. 50%) to hit; "
                 "refused if it would leave no replica serving", default="1")
PROVISIONING = Param("provisioning_delay_s", "seconds", "seconds before a lost replica's replacement starts "
                     "(a node being provisioned); none keeps the cluster's setting", nullable=True, only="local")
WARM_POOL = Param("warm_pool", "count", "pre-loaded standby replicas to have ready before the fault "
                  "(filled and awaited first); none keeps the cluster's setting", nullable=True, only="local")
RADIUS_REPLICAS = ("`replicas` of the active replicas (count or %, default 1); at least one always keeps "
                   "serving")
