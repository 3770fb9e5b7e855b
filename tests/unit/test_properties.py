"""Properties, with hypothesis, of the two readers that must never crash on what they are given.

- The SLO file: any TOML document (random sections, keys and values) either loads into
  objectives that respect their bounds, or is refused with a `UsageError` of one line —
  never another exception, never a traceback. The same for `--slo-set` strings.
- The ledger: a runner killed mid-write leaves its last line cut at any byte; every entry
  before it is still read, and the open entries are exactly those of the entries kept.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferchaos.faults.ledger import Entry, Ledger, UndoStep
from inferchaos.ground.errors import FaultError, UsageError
from inferchaos.probes.slo import PHASE_KEYS, SAFEGUARD_KEYS, SLO_KEYS, load_slo, parse_overrides

# ----------------------------------------------------------------------------- SLO files
#: Names the parser knows, mixed with ones it does not, so both paths get exercised.
KNOWN = ["defaults", "safeguard", "experiments", "slo", "phases", "value", "optional", "spot_reclamation",
         "replica_crash", *SLO_KEYS, *PHASE_KEYS, *SAFEGUARD_KEYS]
#: Any text, line breaks included (what str.splitlines() splits on is echoed escaped).
CHARS = st.characters(blacklist_categories=("Cs",))


def one_line(min_size: int = 0, max_size: int = 10) -> st.SearchStrategy[str]:
    return st.text(alphabet=CHARS, min_size=min_size, max_size=max_size)

keys = st.one_of(st.sampled_from(KNOWN), one_line(1, 12))
scalars = st.one_of(
    st.integers(min_value=-10**6, max_value=10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), one_line(), st.sampled_from([0, 1, 0.5, 1.5, -1, 2000, 1e308]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(keys, inner, max_size=4)), max_leaves=12)


def _toml_key(k: str) -> str:
    return json.dumps(k)  # a TOML basic string: quoted keys take any text


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"


def to_toml(doc: dict[str, Any]) -> str:
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in doc.items())


def nested_docs() -> st.SearchStrategy[dict[str, Any]]:
    """Mostly well-shaped documents (sections of tables of numbers), with random damage."""
    number = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 10**5))
    objective = st.one_of(number, st.fixed_dictionaries({}, optional={"value": number, "optional": st.booleans(),
                                                                      "other": number}), scalars)
    slo = st.dictionaries(st.sampled_from(list(SLO_KEYS) + ["latency_ms"]), objective, max_size=4)
    phases = st.dictionaries(st.sampled_from(list(PHASE_KEYS) + ["warmup_s"]), st.one_of(number, scalars), max_size=3)
    guard = st.dictionaries(st.sampled_from(list(SAFEGUARD_KEYS) + ["max_5xx"]), st.one_of(number, scalars),
                            max_size=2)
    section = st.fixed_dictionaries({}, optional={"slo": slo, "phases": phases, "safeguard": guard})
    return st.fixed_dictionaries({}, optional={
        "defaults": section, "safeguard": guard,
        "experiments": st.dictionaries(st.sampled_from(["spot_reclamation", "replica_crash", "x"]), section,
                                       max_size=2),
        "bogus": values})


def assert_loads_or_one_line(path: Path) -> None:
    try:
        slo = load_slo(path, "spot_reclamation")
    except UsageError as exc:
        text = str(exc)
        assert text and len(text.splitlines()) == 1, repr(text)
        return
    for o in slo.objectives:  # what loaded is within its bounds: the parser checked, not trusted
        assert math.isfinite(o.value) and SLO_KEYS[o.key].bound.problem(o.value) is None, o
    p = slo.phases
    assert p.users >= 1 and p.processes >= 1 and p.hold_s > 0 and p.recovery_window_s > 0 and p.baseline_s >= 0
    assert 0 < slo.safeguard.max_error_rate <= 1 and slo.safeguard.window_s > 0


FILES = settings(max_examples=300, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


@FILES
@given(st.one_of(st.dictionaries(keys, values, max_size=5), nested_docs()))
def test_any_toml_document_loads_or_is_one_usage_error_line(doc):
    folder = Path(tempfile.mkdtemp(prefix="slo-prop-"))
    try:
        path = folder / "slo.toml"
        path.write_text(to_toml(doc))
        assert_loads_or_one_line(path)
    finally:
        shutil.rmtree(folder)


@FILES
@given(st.binary(max_size=200))
def test_any_bytes_load_or_are_one_usage_error_line(data):
    folder = Path(tempfile.mkdtemp(prefix="slo-prop-"))
    try:
        path = folder / "slo.toml"
        path.write_bytes(data)
        assert_loads_or_one_line(path)
    finally:
        shutil.rmtree(folder)


def test_the_generator_reaches_both_outcomes():
    """A property that only ever saw refusals would prove little: both paths are reachable."""
    folder = Path(tempfile.mkdtemp(prefix="slo-prop-"))
    try:
        path = folder / "slo.toml"
        path.write_text(to_toml({"defaults": {"slo": {"p99_ms": 1500.0, "failover_s": {"value": 3, "optional": True}}}}))
        assert load_slo(path, "spot_reclamation").objective("p99_ms").value == 1500.0
        path.write_text(to_toml({"defaults": {"slo": {"availability": 1.5}}}))
        try:
            load_slo(path, "spot_reclamation")
            raise AssertionError("availability 1.5 loaded")
        except UsageError as exc:
            assert "availability" in str(exc)
    finally:
        shutil.rmtree(folder)


override = st.one_of(
    one_line(0, 30),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from([*SLO_KEYS, *PHASE_KEYS, "safeguard.window_s", "x.y", ""]),
              st.one_of(one_line(0, 8), st.floats().map(repr),
                        st.integers(-3, 10**4).map(str))))


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(override, max_size=4))
def test_any_slo_set_strings_parse_or_are_one_usage_error_line(raw):
    try:
        out = parse_overrides(raw)
    except UsageError as exc:
        assert str(exc) and len(str(exc).splitlines()) == 1, repr(str(exc))
        return
    for key, value in out.items():
        assert math.isfinite(value)
        bound = SLO_KEYS[key].bound if key in SLO_KEYS else PHASE_KEYS.get(key) or SAFEGUARD_KEYS[key.split(".", 1)[1]]
        assert bound.problem(value) is None


def test_a_line_break_in_slo_set_is_still_one_line():  # e.g. --slo-set "$(cat f)"
    try:
        parse_overrides(["availability=2\n"])
    except UsageError as exc:
        assert len(str(exc).splitlines()) == 1, repr(str(exc))


def test_a_line_break_in_a_section_name_is_still_one_line(tmp_path):
    path = tmp_path / "slo.toml"
    path.write_text(to_toml({"\r": []}))  # found by the property above, before its names lost line breaks
    assert_loads_or_one_line(path)


# ----------------------------------------------------------------------------- the ledger
apply = st.tuples(st.just("apply"), st.sampled_from(["replica_crash", "gpu_oom", "cluster"]), st.integers(0, 3))
step = st.one_of(apply, st.tuples(st.just("extend"), st.integers(0, 20), st.integers(0, 3)),
                 st.tuples(st.just("revert"), st.integers(0, 20), st.booleans()))
#: (op, a, b) scripts; the first always applies, so there is a ledger to cut.
ops = st.builds(lambda first, rest: [first, *rest], apply, st.lists(step, max_size=15))


def expected_open(entries: list[Entry]) -> dict[str, Entry]:
    """The ledger's meaning, replayed independently: newest applied copy unless reverted."""
    latest: dict[str, Entry] = {}
    for e in entries:
        if e.event == "applied":
            latest[e.id] = e
        elif e.event == "reverted":
            latest.pop(e.id, None)
    return latest


@settings(max_examples=200, deadline=None, database=None)
@given(ops, st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_a_last_line_cut_anywhere_keeps_every_entry_before_it(script, cut_at):
    folder = Path(tempfile.mkdtemp(prefix="ledger-prop-"))
    try:
        ledger = Ledger(folder / "ledger.jsonl")
        made: list[Entry] = []
        for op, a, b in script:
            if op == "apply":
                made.append(ledger.applied(a, [UndoStep("end_group", {"pgid": 10**6 + i}) for i in range(b)],
                                           {"kind": "local", "state_dir": "/x"}, {"n": b}))
            elif made and op == "extend":
                e = made[a % len(made)]
                still = e.id in expected_open(list(ledger.entries()))
                try:  # an entry once reverted is never reopened: extending it raises, the file unchanged
                    made.append(ledger.extend(e, [UndoStep("restore_desired", {"state_dir": "/x", "values": {}})] * b))
                    assert still, f"a reverted entry {e.id} was reopened"
                except FaultError:
                    assert not still, f"an open entry {e.id} could not be extended"
            elif made:
                ledger.reverted(made[a % len(made)], ok=b)
        written = list(ledger.entries())
        assert [e.to_json() for e in written] == [json.dumps(json.loads(line), separators=(",", ":"))
                                                  for line in ledger.path.read_text().splitlines()]

        data = ledger.path.read_bytes()
        last_start = data.rstrip(b"\n").rfind(b"\n") + 1
        last_len = len(data) - 1 - last_start  # without its newline
        keep = last_start + int(cut_at * last_len)  # cut inside the last line: 0 .. len-1 of its bytes
        ledger.path.write_bytes(data[:keep])

        kept = written[:-1]
        assert list(ledger.entries()) == kept
        assert {e.id: e for e in ledger.open_entries()} == expected_open(kept)

        # The next writer starts on a fresh line: nothing before it is lost, its entry is read.
        more = ledger.applied("replica_hang", [], {"kind": "local"})
        assert list(ledger.entries()) == kept + [more]
        assert {e.id: e for e in ledger.open_entries()} == expected_open(kept + [more])
    finally:
        shutil.rmtree(folder)
