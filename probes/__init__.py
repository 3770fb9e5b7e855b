"""What measures: request-log windows, SLO objectives and verdicts, failover, safeguard.

The public names of the SLO path are re-exported here; the other probes are imported
from their own modules (`probes.failover`, `probes.safeguard`, ...). The safeguard's
settings stay `probes.slo.Safeguard`, not re-exported, so they are not mistaken for the
running probe `probes.safeguard.Safeguard`.
"""

from inferchaos.probes.slo import (
    ExperimentSlo,
    Objective,
    Phases,
    default_slo_path,
    load_slo,
    parse_overrides,
)
from inferchaos.probes.verdict import (
    SloResult,
    breached,
    judge,
    observed_from_window,
    reasons_from_window,
    recovery_time,
    verdict,
)
from inferchaos.probes.window import WindowStats, percentile, series, window

__all__ = [
    "ExperimentSlo",
    "Objective",
    "Phases",
    "SloResult",
    "WindowStats",
    "breached",
    "default_slo_path",
    "judge",
    "load_slo",
    "observed_from_window",
    "parse_overrides",
    "percentile",
    "reasons_from_window",
    "recovery_time",
    "series",
    "verdict",
    "window",
]
