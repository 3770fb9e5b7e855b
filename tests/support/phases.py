"""The short phase profile the tests run experiments with: long enough for a fault to land
and a replica to come back on a loaded 2-core machine, short enough that the catalogue's tests
finish in minutes. A test that needs a longer hold says so by name (`short(hold_s=4)`), so
every departure from the profile is visible where it is made."""

from __future__ import annotations

#: the profile: one second of baseline, three of hold, three of recovery
PROFILE: dict[str, float | int | None] = {"baseline_s": 1, "hold_s": 3, "recovery_window_s": 3}


def short(**changes: float | int | None) -> tuple[str, ...]:
    """`KEY=VALUE` overrides (`load_slo`'s, or one per `--slo-set`); None leaves a key to the
    experiment's own SLO section."""
    merged = {**PROFILE, **changes}
    return tuple(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in merged.items() if v is not None)


def slo_set(**changes: float | int | None) -> list[str]:
    """The same overrides as pytest options: `--slo-set KEY=VALUE ...`."""
    return [arg for kv in short(**changes) for arg in ("--slo-set", kv)]
