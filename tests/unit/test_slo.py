"""The SLO file: the default loads, layers merge key by key, and every bad input is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferchaos.ground.errors import UsageError
from inferchaos.probes.slo import (
    BUILTIN_PHASES,
    BUILTIN_SAFEGUARD,
    BUILTIN_SLO,
    SLO_KEYS,
    ExperimentSlo,
    Objective,
    default_slo_path,
    load_slo,
    parse_overrides,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "slo.toml"
    path.write_text(text)
    return path


def values(slo: ExperimentSlo) -> dict[str, float]:
    return {o.key: o.value for o in slo.objectives}


def usage_error(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


# --------------------------------------------------------------------------- the default file
def test_default_file_exists_and_loads() -> None:
    assert default_slo_path().is_file()
    slo = load_slo(default_slo_path(), "an_experiment_without_a_section")
    assert values(slo) == {"availability": 0.99, "p99_ms": 2000, "recovery_s": 6, "failover_s": 10,
                           "freshness_s": 5, "golden_pass_rate": 1.0, "prediction_psi": 0.25, "gpu_xid_errors": 0,
                           "schedule_lag_p99_ms": 100, "stream_integrity": 1.0, "incomplete_rate": 0.05}
    for key in ("freshness_s", "golden_pass_rate", "prediction_psi", "gpu_xid_errors", "stream_integrity",
                "incomplete_rate"):
        assert slo.objective(key).optional, key  # type: ignore[union-attr]
    assert not slo.objective("schedule_lag_p99_ms").optional  # type: ignore[union-attr]
    p = slo.phases
    assert (p.rate, p.baseline_s, p.hold_s, p.recovery_window_s, p.users, p.spawn_rate, p.processes) == \
        (100, 3, 6, 8, 8, 80, 1)
    assert dict(slo.goodput) == {"latency_ms": 2000, "ttft_ms": 1000, "itl_ms": 500}
    assert isinstance(p.users, int) and isinstance(p.processes, int)
    assert (slo.safeguard.max_error_rate, slo.safeguard.window_s, slo.safeguard.max_p99_ms) == (0.5, 3, None)


def test_default_file_overrides_spot_reclamation() -> None:
    slo = load_slo(None, "spot_reclamation")
    assert slo.experiment == "spot_reclamation"
    assert slo.objective("failover_s") == Objective("failover_s", "<=", 8, "s")
    assert slo.phases.hold_s == 8
    assert slo.objective("p99_ms").value == 2000  # type: ignore[union-attr]


def test_default_file_documents_every_key() -> None:
    text = default_slo_path().read_text()
    for key in [*BUILTIN_PHASES, "spawn_rate", *BUILTIN_SAFEGUARD, "max_p99_ms"]:
        assert key in text, key
    # the SLO keys are documented where they are declared, and the reference is generated from that
    reference = (Path(__file__).resolve().parents[2] / "docs" / "slo.md").read_text()
    for key, m in SLO_KEYS.items():
        assert f"| `{key}` | `{m.op}` | {m.unit} |" in reference, key


def test_every_key_is_declared_by_the_probe_that_yields_it() -> None:
    """The vocabulary is the probes' declarations: a probe declares only keys it yields, and
    the keys an objective may name are exactly what the probes declare."""
    from inferchaos.probes.vocabulary import PROBES

    declared: set[str] = set()
    for cls in PROBES:
        names = {m.name for m in cls.measures}
        assert names and names <= set(cls.keys), cls.__name__
        assert all(SLO_KEYS[m.name] is m for m in cls.measures), cls.__name__
        declared |= names
    assert declared == set(SLO_KEYS)


def test_empty_file_gives_builtin_defaults(tmp_path: Path) -> None:
    slo = load_slo(write(tmp_path, ""), "anything")
    assert values(slo) == BUILTIN_SLO
    assert slo.phases.users == 8 and slo.safeguard.window_s == 3


def test_describe_and_lookup() -> None:
    slo = load_slo(None, "x")
    p99 = slo.objective("p99_ms")
    assert p99 is not None and p99.describe() == "p99_ms <= baseline * 2 + 200 ms, at most 2000 ms"
    assert p99.resolve(100.0).target() == "<= 400 ms (baseline 100 * 2 + 200, at most 2000 ms)"
    assert p99.resolve(1500.0).value == 2000  # capped by its limit
    assert p99.resolve(None).value == 2000  # no baseline: the limit alone
    assert slo.objective("availability").describe() == "availability >= 0.99"  # type: ignore[union-attr]
    assert slo.objective("recovery_s").target() == "<= 6 s"  # type: ignore[union-attr]
    assert slo.objective("throughput_rps") is None
    assert Objective("failover_s", "<=", 10, "s", optional=True).describe() == "failover_s <= 10 s (optional)"


# --------------------------------------------------------------------------- layers
LAYERED = """
[defaults.slo]
p99_ms = 1500
throughput_rps = 20
[defaults.phases]
users = 4
hold_s = 6
[safeguard]
max_error_rate = 0.3
max_p99_ms = 9000
[experiments.surge.slo]
p99_ms = 4000
error_rate = 0.02
[experiments.surge.phases]
users = 40
[experiments.surge.safeguard]
window_s = 5
"""


def test_experiment_section_overrides_defaults_key_by_key(tmp_path: Path) -> None:
    path = write(tmp_path, LAYERED)
    surge = load_slo(path, "surge")
    assert values(surge) == {"availability": 0.99, "error_rate": 0.02, "p99_ms": 4000,
                             "throughput_rps": 20, "recovery_s": 6, "failover_s": 10, "schedule_lag_p99_ms": 100}
    assert (surge.phases.users, surge.phases.hold_s, surge.phases.spawn_rate) == (40, 6, 400)
    assert (surge.safeguard.max_error_rate, surge.safeguard.window_s, surge.safeguard.max_p99_ms) == (0.3, 5, 9000)
    other = load_slo(path, "other")
    assert values(other)["p99_ms"] == 1500 and "error_rate" not in values(other)
    assert (other.phases.users, other.safeguard.window_s) == (4, 3)


def test_objectives_come_in_registry_order(tmp_path: Path) -> None:
    slo = load_slo(write(tmp_path, LAYERED), "surge")
    order = list(SLO_KEYS)
    keys = [o.key for o in slo.objectives]
    assert keys == sorted(keys, key=order.index)


def test_explicit_spawn_rate_is_kept(tmp_path: Path) -> None:
    slo = load_slo(write(tmp_path, "[defaults.phases]\nusers = 3\nspawn_rate = 1.5\n"), "x")
    assert (slo.phases.users, slo.phases.spawn_rate) == (3, 1.5)


def test_optional_objectives(tmp_path: Path) -> None:
    path = write(tmp_path, """
[defaults.slo]
cold_start_s = { value = 30, optional = true }
ttft_p99_ms = { value = 800 }
[experiments.lag.slo]
failover_s = { optional = true }
cold_start_s = 25
""")
    lag = load_slo(path, "lag")
    assert lag.objective("failover_s") == Objective("failover_s", "<=", 10, "s", optional=True)
    assert lag.objective("cold_start_s") == Objective("cold_start_s", "<=", 25, "s", optional=True)
    assert lag.objective("ttft_p99_ms") == Objective("ttft_p99_ms", "<=", 800, "ms", optional=False)
    assert load_slo(path, "x").objective("failover_s").optional is False  # type: ignore[union-attr]


def test_optional_table_without_value_needs_something_to_inherit(tmp_path: Path) -> None:
    path = write(tmp_path, "[experiments.lag.slo]\nfreshness_s = { optional = true }\n")
    msg = usage_error(load_slo, path, "lag")
    assert "[experiments.lag.slo] freshness_s" in msg and "value" in msg


# --------------------------------------------------------------------------- overrides
def test_overrides_win_and_apply_to_every_experiment(tmp_path: Path) -> None:
    path = write(tmp_path, LAYERED)
    sets = ["p99_ms=2500", "users=16", "safeguard.window_s=1.5", "availability = 0.95", "cold_start_s=40"]
    for name in ("surge", "other", "spot_reclamation"):
        slo = load_slo(path, name, sets)
        assert values(slo)["p99_ms"] == 2500 and values(slo)["availability"] == 0.95
        assert values(slo)["cold_start_s"] == 40
        assert slo.phases.users == 16 and isinstance(slo.phases.users, int)
        assert slo.safeguard.window_s == 1.5


def test_override_keeps_optional_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "[defaults.slo]\nfailover_s = { value = 10, optional = true }\n")
    assert load_slo(path, "x", ["failover_s=3"]).objective("failover_s") == Objective(
        "failover_s", "<=", 3, "s", optional=True)


def test_parse_overrides() -> None:
    assert parse_overrides(["p99_ms=2500", "users=4", "safeguard.max_p99_ms=1e4", "p99_ms=100"]) == {
        "p99_ms": 100.0, "users": 4.0, "safeguard.max_p99_ms": 10000.0}
    assert parse_overrides([]) == {}


@pytest.mark.parametrize("raw, words", [
    ("p99_ms", ["KEY=VALUE"]),
    ("=5", ["KEY=VALUE"]),
    ("p99_ms=", ["KEY=VALUE"]),
    ("p99ms=5", ["unknown key 'p99ms'", "did you mean 'p99_ms'"]),
    ("safeguard.window=5", ["unknown key", "safeguard.window_s"]),
    ("bogus_thing=5", ["unknown key 'bogus_thing'"]),
    ("p99_ms=fast", ["p99_ms", "expected a number", "'fast'"]),
    ("p99_ms=true", ["expected a number"]),
    ("p99_ms=nan", ["finite"]),
    ("hold_s=inf", ["finite"]),
    ("availability=1.5", ["availability", "[0, 1]", "1.5"]),
    ("users=0", ["users", ">= 1", "0"]),
    ("users=2.5", ["users", "integer"]),
    ("hold_s=-1", ["hold_s", "> 0"]),
    ("safeguard.max_error_rate=0", ["max_error_rate", "(0, 1]"]),
])
def test_bad_overrides_are_one_line(raw: str, words: list[str]) -> None:
    msg = usage_error(parse_overrides, [raw])
    assert msg.startswith(f"--slo-set {raw}")
    for word in words:
        assert word in msg, (word, msg)
    usage_error(load_slo, None, "x", [raw])


# --------------------------------------------------------------------------- bad files
@pytest.mark.parametrize("text, words", [
    ("[experiments.spot_reclamation.slo]\np99_ms = 'fast'\n",
     ["[experiments.spot_reclamation.slo] p99_ms: expected a number or a bound relative to the baseline "
      "(\"baseline * 1.5\", \"baseline + 200\"), got 'fast'"]),
    ("[defaults.slo]\np99_ms = true\n", ["[defaults.slo] p99_ms", "expected a number, got true"]),
    ("[defaults.slo]\navailability = 1.5\n", ["[defaults.slo] availability", "[0, 1]", "1.5"]),
    ("[defaults.slo]\nerror_rate = -0.1\n", ["error_rate", "[0, 1]"]),
    ("[defaults.slo]\np99_ms = -5\n", ["p99_ms", ">= 0", "-5"]),
    ("[defaults.slo]\np99_ms = nan\n", ["p99_ms", "finite"]),
    ("[defaults.slo]\np99_ms = inf\n", ["p99_ms", "finite"]),
    ("[defaults.slo]\np99_ms = [1, 2]\n", ["expected a number, got an array"]),
    ("[defaults.slo]\np99ms = 5\n", ["[defaults.slo]", "unknown SLO key 'p99ms'", "did you mean 'p99_ms'"]),
    ("[defaults.slo]\np99_ms = { value = 5, optinal = true }\n", ["p99_ms", "'optinal'", "did you mean 'optional'"]),
    ("[defaults.slo]\np99_ms = { value = 5, optional = 1 }\n", ["p99_ms", "optional", "true or false"]),
    ("[defaults.slo]\np99_ms = { value = 'x' }\n", ["p99_ms: value", "expected a number"]),
    ("[defaults.phases]\nusers = 0\n", ["[defaults.phases] users", ">= 1"]),
    ("[defaults.phases]\nusers = 2.5\n", ["users", "integer"]),
    ("[defaults.phases]\nusers = '8'\n", ["users", "expected a number, got '8'"]),
    ("[defaults.phases]\nhold_s = 0\n", ["hold_s", "> 0"]),
    ("[defaults.phases]\nbaseline_s = -1\n", ["baseline_s", ">= 0"]),
    ("[defaults.phases]\nrecovery_window_s = -3\n", ["recovery_window_s"]),
    ("[defaults.phases]\nprocesses = 0\n", ["processes"]),
    ("[defaults.phases]\nhold = 3\n", ["unknown phase key 'hold'", "did you mean 'hold_s'"]),
    ("[safeguard]\nmax_error_rate = 0\n", ["[safeguard] max_error_rate", "(0, 1]"]),
    ("[safeguard]\nmax_error_rate = 1.01\n", ["max_error_rate"]),
    ("[safeguard]\nwindow_s = 0\n", ["window_s", "> 0"]),
    ("[safeguard]\nmax_p99 = 10\n", ["unknown safeguard key", "max_p99_ms"]),
    ("[default.slo]\np99_ms = 5\n", ["unknown section [default]", "did you mean 'defaults'"]),
    ("[slo]\np99_ms = 5\n", ["unknown section [slo]"]),
    ("defaults = 3\n", ["[defaults]", "expected a table"]),
    ("[defaults]\nslo = 3\n", ["[defaults.slo]", "expected a table"]),
    ("[defaults.slos]\np99_ms = 3\n", ["[defaults] unknown key 'slos'", "did you mean 'slo'"]),
    ("[experiments]\nfoo = 3\n", ["[experiments.foo]", "expected a table"]),
    ("[experiments.foo]\np99_ms = 3\n", ["[experiments.foo] unknown key 'p99_ms'"]),
    ("[experiments.other.phases]\nusers = 0\n", ["[experiments.other.phases] users"]),
])
def test_bad_file_is_one_line_naming_file_section_and_key(tmp_path: Path, text: str, words: list[str]) -> None:
    msg = usage_error(load_slo, write(tmp_path, text), "spot_reclamation")
    assert "slo.toml: " in msg
    for word in words:
        assert word in msg, (word, msg)


def test_unknown_experiment_sections_are_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, "[experiments.someone_elses.slo]\np99_ms = 100\n")
    assert values(load_slo(path, "mine"))["p99_ms"] == 2000


def test_invalid_toml_says_line_and_column(tmp_path: Path) -> None:
    msg = usage_error(load_slo, write(tmp_path, "[defaults.slo]\np99_ms = = 3\n"), "x")
    assert "invalid TOML" in msg and "line 2" in msg and "column" in msg


def test_duplicate_key_is_invalid_toml(tmp_path: Path) -> None:
    msg = usage_error(load_slo, write(tmp_path, "[defaults.slo]\np99_ms = 1\np99_ms = 2\n"), "x")
    assert "invalid TOML" in msg and "line 3" in msg


def test_missing_file(tmp_path: Path) -> None:
    msg = usage_error(load_slo, tmp_path / "nope.toml", "x")
    assert "nope.toml" in msg and "cannot read" in msg


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert "cannot read" in usage_error(load_slo, tmp_path, "x")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "slo.toml"
    path.write_bytes(b"[defaults.slo]\np99_ms = 5 # \xff\n")
    assert "UTF-8" in usage_error(load_slo, path, "x")


def test_relative_path_is_shown_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "slo.toml").write_text("[experiments.spot_reclamation.slo]\np99_ms = 'fast'\n")
    monkeypatch.chdir(tmp_path)
    msg = usage_error(load_slo, Path("experiments/slo.toml"), "spot_reclamation")
    assert msg == ("experiments/slo.toml: [experiments.spot_reclamation.slo] p99_ms: expected a number or a bound "
                   "relative to the baseline (\"baseline * 1.5\", \"baseline + 200\"), got 'fast'")


def test_usage_error_exit_code() -> None:
    with pytest.raises(UsageError) as info:
        parse_overrides(["nope"])
    assert info.value.exit_code == 2


def test_unknown_key_without_a_close_match_lists_the_known_ones(tmp_path: Path) -> None:
    msg = usage_error(load_slo, write(tmp_path, "[defaults.slo]\nlatency = 5\n"), "x")
    assert "unknown SLO key 'latency'" in msg and "known: availability, error_rate" in msg
    assert "safeguard.window_s" in usage_error(parse_overrides, ["zzz=1"])


# --------------------------------------------------------------------------- relative, steady state
def test_relative_objectives_parse_in_every_form(tmp_path):
    f = tmp_path / "slo.toml"
    f.write_text('[defaults.slo]\np99_ms = "baseline + 200"\nthroughput_rps = { value = "baseline * 0.9", limit = 50 }\n'
                 '[experiments.x.slo]\np95_ms = { value = "baseline * 1.5", limit = 900, optional = true }\n')
    slo = load_slo(f, "x")
    p99, rps, p95 = (slo.objective(k) for k in ("p99_ms", "throughput_rps", "p95_ms"))
    assert p99 is not None and p99.resolve(100.0).value == 300
    assert rps is not None and rps.resolve(100.0).value == 90 and rps.resolve(20.0).value == 50  # at least 50
    assert p95 is not None and p95.optional and p95.resolve(1000.0).value == 900  # at most 900
    over = load_slo(f, "x", ["p99_ms=baseline * 3"])
    assert over.objective("p99_ms").resolve(100.0).value == 300  # type: ignore[union-attr]


@pytest.mark.parametrize("text, words", [
    ('[defaults.slo]\nrecovery_s = "baseline * 2"\n', ["recovery_s", "baseline measures no recovery_s"]),
    ('[defaults.slo]\np99_ms = { value = 500, limit = 400 }\n', ["limit", "only a relative value"]),
    ('[defaults.slo]\np99_ms = "baseline * 0"\n', ["factor must be above 0"]),
    ('[defaults.steady_state]\nrecovery_s = 3\n', ["steady-state key", "recovery_s"]),
])
def test_bad_relative_or_steady_state_is_one_line(tmp_path, text, words):
    f = tmp_path / "slo.toml"
    f.write_text(text)
    with pytest.raises(UsageError) as e:
        load_slo(f, "x")
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_steady_state_comes_from_the_file_else_from_the_objectives(tmp_path):
    default = load_slo(None, "x", ["p99_ms=0.001"])  # a planted breach does not move the hypothesis
    assert {(o.key, o.value) for o in default.steady_state} == {("availability", 0.99), ("p99_ms", 2000)}
    assert {(o.key, o.value) for o in load_slo(None, "x", ["steady_state.p99_ms=300"]).steady_state} == \
        {("availability", 0.99), ("p99_ms", 300)}
    f = tmp_path / "slo.toml"
    f.write_text('[defaults.slo]\navailability = 0.95\np99_ms = { value = "baseline * 2", limit = 800 }\n')
    assert {(o.key, o.value) for o in load_slo(f, "x").steady_state} == {("availability", 0.95), ("p99_ms", 800)}


def test_a_recovery_window_too_short_to_show_recovery_is_refused():
    with pytest.raises(UsageError) as e:
        load_slo(None, "x", ["recovery_window_s=2"])
    assert "recovery_window_s 2 is shorter than recovery_healthy_s 3" in str(e.value)
    assert load_slo(None, "x", ["recovery_window_s=2", "recovery_healthy_s=2"]).phases.recovery_healthy_s == 2
