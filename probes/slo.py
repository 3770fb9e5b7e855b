"""The SLO file: what every experiment is judged on, and how long each phase lasts.

A file and not code, because the same experiments run nightly in staging, as a short CI
gate and on game days, and each audience tightens or loosens objectives without touching
the tests. Layers, lowest first: built-in defaults → `[defaults]` and `[safeguard]` in
the file → `[experiments.<name>]` → `--slo-set KEY=VALUE` (for every experiment, wins
over all), merged key by key. Every mistake is a `UsageError` of one line naming the
file, the section, the key and the problem, raised before anything is injected.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

from inferchaos.ground.errors import UsageError
from inferchaos.probes.measure import COUNT, DURATION, FRACTION, POSITIVE, Bound, Measure
from inferchaos.probes.vocabulary import MEASURES, RELATIVE, STEADY


# --------------------------------------------------------------------------- registries
#: Every objective an experiment can be judged on, as the probes declare it (probes/vocabulary.py).
SLO_KEYS: dict[str, Measure] = MEASURES

PHASE_KEYS: dict[str, Bound] = {
    "rate": DURATION,
    "baseline_s": DURATION,
    "hold_s": POSITIVE,
    "recovery_window_s": POSITIVE,
    "users": COUNT,
    "spawn_rate": POSITIVE,
    "processes": COUNT,
    "recovery_healthy_s": COUNT,
}

SAFEGUARD_KEYS: dict[str, Bound] = {
    "max_error_rate": Bound(0.0, low_open=True, high=1.0),
    "window_s": POSITIVE,
    "max_p99_ms": POSITIVE,
}

#: The keys a bound relative to the baseline may use: what the baseline window measures.
RELATIVE_KEYS: tuple[str, ...] = RELATIVE

#: What the baseline may be judged on before anything is injected (the steady-state hypothesis).
STEADY_KEYS: tuple[str, ...] = STEADY

#: Per-request constraints a valid answer must also meet to count as goodput (any subset).
GOODPUT_KEYS: dict[str, Bound] = {"latency_ms": POSITIVE, "ttft_ms": POSITIVE, "itl_ms": POSITIVE, "tpot_ms": POSITIVE}

BUILTIN_SLO: dict[str, float] = {"availability": 0.99, "p99_ms": 2000, "recovery_s": 6, "failover_s": 10,
                                 "schedule_lag_p99_ms": 100}
BUILTIN_PHASES: dict[str, float] = {"rate": 100, "baseline_s": 3, "hold_s": 6, "recovery_window_s": 8, "users": 8,
                                    "processes": 1, "recovery_healthy_s": 3}
BUILTIN_SAFEGUARD: dict[str, float] = {"max_error_rate": 0.5, "window_s": 3}

OVERRIDE_KEYS: tuple[str, ...] = (*SLO_KEYS, *PHASE_KEYS, *(f"safeguard.{k}" for k in SAFEGUARD_KEYS),
                                  *(f"steady_state.{k}" for k in STEADY_KEYS))


# --------------------------------------------------------------------------- results
RELATIVE = re.compile(r"\s*baseline\s*(?:\*\s*(?P<factor>\d+(?:\.\d+)?))?\s*"
                      r"(?:(?P<sign>[+-])\s*(?P<offset>\d+(?:\.\d+)?))?\s*")


@dataclass(frozen=True)
class Relative:
    """`baseline * factor + offset`: the bound follows what this target did before the
    fault, so one SLO file fits a 5-ms model and a 500-ms one."""

    factor: float = 1.0
    offset: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Relative | None:
        m = RELATIVE.fullmatch(text)
        if not m or (m["factor"] is None and m["offset"] is None):
            return None
        offset = float(m["offset"] or 0) * (-1 if m["sign"] == "-" else 1)
        return cls(float(m["factor"] or 1), offset)

    def apply(self, baseline: float) -> float:
        return baseline * self.factor + self.offset

    def __str__(self) -> str:
        text = "baseline" + (f" * {self.factor:g}" if self.factor != 1 else "")
        return text + (f" {'+' if self.offset >= 0 else '-'} {abs(self.offset):g}" if self.offset else "")


@dataclass(frozen=True)
class Objective:
    key: str
    op: str
    value: float
    unit: str
    optional: bool = False
    #: the bound as a function of the baseline's own value of the key (None: absolute).
    relative: Relative | None = None
    #: with `relative`: the absolute bound it may never be looser than (None: none).
    limit: float | None = None
    #: the baseline value a relative objective was resolved against.
    baseline: float | None = None

    @property
    def resolved_yet(self) -> bool:
        return self.relative is None or self.baseline is not None

    def resolve(self, baseline: float | None) -> Objective:
        """The absolute objective for a run whose baseline measured `baseline`; without a
        baseline value the bound is the limit, or NaN (which nothing meets)."""
        if self.relative is None:
            return self
        if baseline is None:
            return replace(self, value=math.nan if self.limit is None else self.limit)
        value = self.relative.apply(baseline)
        if self.limit is not None:
            value = min(value, self.limit) if self.op == "<=" else max(value, self.limit)
        return replace(self, value=value, baseline=baseline)

    def target(self) -> str:
        """The bound alone, e.g. "<= 2000 ms", as the SLO table shows it; a relative one
        says what it was made of: "<= 612 ms (baseline 408 * 1.5)"."""
        unit = "" if self.unit in ("fraction", "") else f" {self.unit}"
        if self.relative is None:
            return f"{self.op} {self.value:g}{unit}"
        cap = "" if self.limit is None else f", {'at most' if self.op == '<=' else 'at least'} {self.limit:g}{unit}"
        if self.baseline is None:
            return f"{self.op} {self.relative}{unit}{cap}"
        made = str(self.relative).replace("baseline", f"baseline {self.baseline:.4g}", 1)
        return f"{self.op} {self.value:.4g}{unit} ({made}{cap})"

    def describe(self) -> str:
        return f"{self.key} {self.target()}" + (" (optional)" if self.optional else "")


#: How a PromQL range (every series, every 1-s point of inject -> end) becomes one value.
REDUCERS = ("max", "min", "mean", "last")
PROMQL_FIELDS = ("query", "op", "value", "unit", "reduce", "optional")


@dataclass(frozen=True)
class PromObjective:
    """An objective whose observation is a PromQL query, e.g. the servers' own p99 from
    `histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket[5s])))`."""

    key: str
    query: str
    op: str
    value: float
    unit: str = ""
    reduce: str = "max"
    optional: bool = False

    @property
    def objective(self) -> Objective:
        return Objective(self.key, self.op, self.value, self.unit, self.optional)


@dataclass(frozen=True)
class Phases:
    #: open-loop arrivals/s; 0 means closed loop with `users` users.
    rate: float
    baseline_s: float
    hold_s: float
    recovery_window_s: float
    users: int
    spawn_rate: float
    processes: int
    #: recovery_s ends where this many consecutive 1-s windows are healthy.
    recovery_healthy_s: int = 3


@dataclass(frozen=True)
class Safeguard:
    max_error_rate: float
    window_s: float
    max_p99_ms: float | None = None


@dataclass(frozen=True)
class ExperimentSlo:
    experiment: str
    objectives: tuple[Objective, ...]
    phases: Phases
    safeguard: Safeguard
    promql: tuple[PromObjective, ...] = ()
    #: goodput's per-request constraints, e.g. {"ttft_ms": 500, "itl_ms": 100}.
    goodput: tuple[tuple[str, float], ...] = ()
    #: what the baseline must meet before anything is injected; else the run is inconclusive.
    steady_state: tuple[Objective, ...] = ()

    def objective(self, key: str) -> Objective | None:
        return next((o for o in self.objectives if o.key == key), None)


# --------------------------------------------------------------------------- layers
@dataclass(frozen=True)
class _Spec:
    """One objective as one layer writes it; None means "inherit from the layer below"."""

    value: float | Relative | None
    optional: bool | None = None
    limit: float | None = None


@dataclass
class _Layer:
    where: str
    slo: dict[str, _Spec] = field(default_factory=dict)
    phases: dict[str, float] = field(default_factory=dict)
    safeguard: dict[str, float] = field(default_factory=dict)
    promql: dict[str, PromObjective] = field(default_factory=dict)
    goodput: dict[str, float] = field(default_factory=dict)
    steady: dict[str, float] = field(default_factory=dict)


def default_slo_path() -> Path:
    """The SLO file inferchaos ships: experiments/slo.toml, beside the experiments it
    sets objectives for (`inferchaos/experiments/slo.toml` in a wheel; one file)."""
    return Path(str(resources.files("inferchaos.experiments") / "slo.toml"))


def load_slo(path: Path | None, experiment: str, overrides: Sequence[str] = ()) -> ExperimentSlo:
    """Objectives, phases and safeguard for `experiment`.

    `path` None reads the default file, and falls back to the built-in defaults when the
    package was installed without it; a file the user named must exist. Every
    experiment section in the file is checked, not only this one, so a typo in another
    experiment's section fails tonight's run rather than next week's."""
    wins = _override_layer(parse_overrides(overrides))
    if path is None and not default_slo_path().is_file():
        src, doc = "built-in defaults", {}
    else:
        path = default_slo_path() if path is None else Path(path)
        src, doc = _display(path), _read(path)
    defaults, experiments = _parse_doc(doc, src)
    builtin = _Layer("built-in defaults", {k: _Spec(v, False) for k, v in BUILTIN_SLO.items()},
                     dict(BUILTIN_PHASES), dict(BUILTIN_SAFEGUARD))
    for name, layer in experiments.items():
        _build(name, [builtin, defaults, layer], src)
    own = experiments.get(experiment, _Layer(f"[experiments.{experiment}]"))
    return _build(experiment, [builtin, defaults, own, wins], src)


def parse_overrides(overrides: Sequence[str]) -> dict[str, float]:
    """`--slo-set KEY=VALUE` strings → {key: value}, validated, so option parsing can fail
    early with one line. KEY is an SLO key, a phase key or `safeguard.<key>`."""
    out: dict[str, float] = {}
    for raw in overrides:
        where = f"--slo-set {_escape(raw)}"
        key, sep, text = (part.strip() for part in raw.partition("="))
        if not sep or not key or not text:
            raise UsageError(f"{where}: expected KEY=VALUE, e.g. p99_ms=2500")
        bound = _override_bound(key)
        if bound is None:
            raise UsageError(f"{where}: unknown key {key!r}{_suggest(key, OVERRIDE_KEYS)}")
        try:
            value: Any = float(text)
        except ValueError:
            value = text
        if key in SLO_KEYS and isinstance(value, str):
            out[key] = _relative(value, f"{where}: {key}", key)
            continue
        out[key] = _number(value, f"{where}: {key}", bound)
    return out


# --------------------------------------------------------------------------- reading
def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _read(path: Path) -> dict[str, Any]:
    src = _display(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise UsageError(f"{src}: cannot read SLO file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise UsageError(f"{src}: not UTF-8 text: {e.reason} at byte {e.start}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{src}: invalid TOML: {_one_line(str(e))}") from None


def _parse_doc(doc: Mapping[str, Any], src: str) -> tuple[_Layer, dict[str, _Layer]]:
    top = ("defaults", "safeguard", "experiments")
    for name in doc:
        if name not in top:
            raise UsageError(f"{src}: unknown section [{_escape(name)}]{_suggest(name, top)};"
                             " expected [defaults], [safeguard] or [experiments.<name>]")
    defaults = _layer(_table(doc.get("defaults", {}), src, "[defaults]"), src, "defaults",
                      allowed=("slo", "phases", "promql", "goodput", "steady_state"))
    defaults.safeguard = _numbers(_table(doc.get("safeguard", {}), src, "[safeguard]"),
                                  src, "[safeguard]", SAFEGUARD_KEYS, "safeguard key")
    experiments: dict[str, _Layer] = {}
    for name, section in _table(doc.get("experiments", {}), src, "[experiments]").items():
        where = f"experiments.{_escape(name)}"
        experiments[name] = _layer(_table(section, src, f"[{where}]"), src, where,
                                   allowed=("slo", "phases", "safeguard", "promql", "goodput", "steady_state"))
    return defaults, experiments


def _layer(section: Mapping[str, Any], src: str, where: str, allowed: tuple[str, ...]) -> _Layer:
    layer = _Layer(f"[{where}]")
    for name, value in section.items():
        if name not in allowed:
            listed = ", ".join(f"[{where}.{a}]" for a in allowed)
            raise UsageError(f"{src}: [{where}] unknown key {name!r}{_suggest(name, allowed)};"
                             f" expected the sections {listed}")
        table = _table(value, src, f"[{where}.{name}]")
        if name == "slo":
            layer.slo = {k: _objective(k, v, src, f"[{where}.slo] {k}") for k, v in _known(
                table, src, f"[{where}.slo]", SLO_KEYS, "SLO key").items()}
        elif name == "phases":
            layer.phases = _numbers(table, src, f"[{where}.phases]", PHASE_KEYS, "phase key")
        elif name == "goodput":
            layer.goodput = _numbers(table, src, f"[{where}.goodput]", GOODPUT_KEYS, "goodput constraint")
        elif name == "steady_state":
            layer.steady = _numbers(table, src, f"[{where}.steady_state]", {k: SLO_KEYS[k].bound for k in STEADY_KEYS},
                                    "steady-state key")
        elif name == "promql":
            layer.promql = {k: _prom_objective(k, v, src, f"[{where}.promql.{k}]") for k, v in table.items()}
        else:
            layer.safeguard = _numbers(table, src, f"[{where}.safeguard]", SAFEGUARD_KEYS, "safeguard key")
    return layer


def _objective(key: str, value: Any, src: str, where: str) -> _Spec:
    """A number, a relative bound ("baseline * 1.5", "baseline + 200"), or a table
    `{ value = ..., limit = 2000, optional = true }` (any part may be inherited)."""
    bound = SLO_KEYS[key].bound
    if not isinstance(value, dict):
        return _Spec(_value(value, f"{src}: {where}", bound, key))
    fields = ("value", "limit", "optional")
    for k in value:
        if k not in fields:
            raise UsageError(f"{src}: {where}: unknown key {k!r} in the objective's table{_suggest(k, fields)}")
    optional = value.get("optional")
    if optional is not None and not isinstance(optional, bool):
        raise UsageError(f"{src}: {where}: optional: expected true or false, got {_show(optional)}")
    number = _value(value["value"], f"{src}: {where}: value", bound, key) if "value" in value else None
    limit = _number(value["limit"], f"{src}: {where}: limit", bound) if "limit" in value else None
    if limit is not None and not isinstance(number, Relative):
        raise UsageError(f"{src}: {where}: limit: only a relative value (\"baseline * 1.5\") takes a limit")
    return _Spec(number, optional, limit)


def _value(value: Any, where: str, bound: Bound, key: str) -> float | Relative:
    return _relative(value, where, key) if isinstance(value, str) else _number(value, where, bound)


def _relative(text: str, where: str, key: str) -> Relative:
    if key not in RELATIVE_KEYS:
        raise UsageError(f"{where}: the baseline measures no {key} to be relative to; give a number "
                         f"(relative bounds: {', '.join(RELATIVE_KEYS)})")
    rel = Relative.parse(text)
    if rel is None:
        raise UsageError(f"{where}: expected a number or a bound relative to the baseline "
                         f"(\"baseline * 1.5\", \"baseline + 200\"), got {_show(text)}")
    if rel.factor <= 0:
        raise UsageError(f"{where}: the baseline's factor must be above 0, got {rel.factor:g}")
    return rel


def _prom_objective(key: str, value: Any, src: str, where: str) -> PromObjective:
    """`[experiments.x.promql.<key>]`: query, op ("<=" or ">="), value; unit, reduce and
    optional if wanted. The key names the objective in verdicts, so it may not shadow one
    of the built-in SLO keys."""
    if not key.isidentifier():
        raise UsageError(f"{src}: {where}: the name must be a word like queue_waiting_max, got {key!r}")
    if key in SLO_KEYS:
        raise UsageError(f"{src}: {where}: {key!r} is a built-in SLO key; give the PromQL objective its own name")
    table = _table(value, src, where)
    for k in table:
        if k not in PROMQL_FIELDS:
            raise UsageError(f"{src}: {where}: unknown key {k!r}{_suggest(k, PROMQL_FIELDS)}")
    for k in ("query", "op", "value"):
        if k not in table:
            raise UsageError(f"{src}: {where}: missing {k!r} (a PromQL objective needs query, op and value)")
    query, op, unit, reduce = table["query"], table["op"], table.get("unit", ""), table.get("reduce", "max")
    if not isinstance(query, str) or not query.strip():
        raise UsageError(f"{src}: {where}: query: expected a PromQL expression, got {_show(query)}")
    if op not in ("<=", ">="):
        raise UsageError(f"{src}: {where}: op: expected \"<=\" or \">=\", got {_show(op)}")
    if not isinstance(unit, str):
        raise UsageError(f"{src}: {where}: unit: expected text, got {_show(unit)}")
    if reduce not in REDUCERS:
        raise UsageError(f"{src}: {where}: reduce: expected one of {', '.join(REDUCERS)}, got {_show(reduce)}")
    optional = table.get("optional", False)
    if not isinstance(optional, bool):
        raise UsageError(f"{src}: {where}: optional: expected true or false, got {_show(optional)}")
    number = _number(table["value"], f"{src}: {where}: value", Bound(-math.inf))
    return PromObjective(key, query.strip(), op, number, unit, reduce, optional)


def _numbers(table: Mapping[str, Any], src: str, where: str, keys: Mapping[str, Bound],
             what: str) -> dict[str, float]:
    return {k: _number(v, f"{src}: {where} {k}", keys[k]) for k, v in _known(table, src, where, keys, what).items()}


def _known(table: Mapping[str, Any], src: str, where: str, keys: Mapping[str, Any], what: str) -> Mapping[str, Any]:
    for k in table:
        if k not in keys:
            raise UsageError(f"{src}: {where} unknown {what} {k!r}{_suggest(k, keys)}")
    return table


def _table(value: Any, src: str, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{src}: {where}: expected a table, got {_show(value)}")
    return value


def _number(value: Any, where: str, bound: Bound) -> float:
    """A finite int or float within `bound`; a bool is not a number, whatever Python says."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{where}: expected a number, got {_show(value)}")
    if not math.isfinite(value):
        raise UsageError(f"{where}: expected a finite number, got {value}")
    problem = bound.problem(value)
    if problem:
        raise UsageError(f"{where}: {problem}")
    return float(value)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value) if isinstance(value, str) else str(value)


def _suggest(word: str, known: Sequence[str] | Mapping[str, Any]) -> str:
    """The closest known name, else the list of them: the fix should be in the message."""
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"


#: every character str.splitlines() breaks a line at.
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def _escape(text: str) -> str:
    """What the user typed, echoed on one line: line breaks shown, not obeyed."""
    return "".join(c.encode("unicode_escape").decode() if c in LINE_BREAKS else c for c in text)


def _one_line(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- merging
def _override_bound(key: str) -> Bound | None:
    if key in SLO_KEYS:
        return SLO_KEYS[key].bound
    if key in PHASE_KEYS:
        return PHASE_KEYS[key]
    prefix, _, rest = key.partition(".")
    if prefix == "steady_state" and rest in STEADY_KEYS:
        return SLO_KEYS[rest].bound
    return SAFEGUARD_KEYS.get(rest) if prefix == "safeguard" else None


def _override_layer(values: Mapping[str, Any]) -> _Layer:
    layer = _Layer("--slo-set")
    for key, value in values.items():
        if key in SLO_KEYS:
            layer.slo[key] = _Spec(value)
        elif key in PHASE_KEYS:
            layer.phases[key] = value
        elif key.startswith("steady_state."):
            layer.steady[key.partition(".")[2]] = value
        else:
            layer.safeguard[key.partition(".")[2]] = value
    return layer


def _build(experiment: str, layers: Sequence[_Layer], src: str) -> ExperimentSlo:
    specs: dict[str, _Spec] = {}
    phases: dict[str, float] = {}
    guard: dict[str, float] = {}
    promql: dict[str, PromObjective] = {}
    goodput: dict[str, float] = {}
    steady: dict[str, float] = {}
    for layer in layers:
        promql.update(layer.promql)
        goodput.update(layer.goodput)
        steady.update(layer.steady)
        for key, spec in layer.slo.items():
            below = specs.get(key, _Spec(None, False))
            if spec.value is None and below.value is None:
                raise UsageError(f"{src}: {layer.where.rstrip(']')}.slo] {key}: the objective's table needs"
                                 " a value (no default to inherit)")
            value = below.value if spec.value is None else spec.value
            limit = spec.limit if spec.limit is not None or spec.value is not None else below.limit
            specs[key] = _Spec(value, below.optional if spec.optional is None else spec.optional,
                               limit if isinstance(value, Relative) else None)
        phases.update(layer.phases)
        guard.update(layer.safeguard)
    objectives = tuple(_made(k, s) for k in SLO_KEYS if (s := specs.get(k)) is not None and s.value is not None)
    if phases["recovery_window_s"] < phases["recovery_healthy_s"]:
        raise UsageError(f"{src}: [experiments.{experiment}]: recovery_window_s {phases['recovery_window_s']:g} is "
                         f"shorter than recovery_healthy_s {phases['recovery_healthy_s']:g}: recovery_s could never "
                         "be measured (lengthen the window or lower recovery_healthy_s)")
    users = int(phases["users"])
    return ExperimentSlo(
        experiment=experiment,
        objectives=objectives,
        phases=Phases(rate=phases["rate"], baseline_s=phases["baseline_s"], hold_s=phases["hold_s"],
                      recovery_window_s=phases["recovery_window_s"], users=users,
                      spawn_rate=phases.get("spawn_rate", users * 10.0), processes=int(phases["processes"]),
                      recovery_healthy_s=int(phases["recovery_healthy_s"])),
        safeguard=Safeguard(guard["max_error_rate"], guard["window_s"], guard.get("max_p99_ms")),
        promql=tuple(promql.values()),
        goodput=tuple(sorted(goodput.items())),
        steady_state=_steady(steady, objectives),
    )


def _made(key: str, spec: _Spec) -> Objective:
    op, unit = SLO_KEYS[key].op, SLO_KEYS[key].unit
    if isinstance(spec.value, Relative):
        return Objective(key, op, math.nan if spec.limit is None else spec.limit, unit, bool(spec.optional),
                         relative=spec.value, limit=spec.limit)
    assert spec.value is not None
    return Objective(key, op, spec.value, unit, bool(spec.optional))


def _steady(steady: Mapping[str, float], objectives: Sequence[Objective]) -> tuple[Objective, ...]:
    """The steady-state hypothesis: the `[steady_state]` keys where the file names any;
    else the experiment's own availability and latency objectives, absolute (a relative
    one by its limit: a baseline cannot be judged against itself)."""
    if steady:
        return tuple(Objective(k, SLO_KEYS[k].op, v, SLO_KEYS[k].unit) for k, v in steady.items())
    out = []
    for o in objectives:
        if o.key not in ("availability", "error_rate", "p50_ms", "p95_ms", "p99_ms"):
            continue
        if o.relative is None:
            out.append(replace(o, optional=False))
        elif o.limit is not None:
            out.append(Objective(o.key, o.op, o.limit, o.unit))
    return tuple(out)
