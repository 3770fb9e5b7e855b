"""Is the model still answering right? A golden-set canary and prediction drift.

Availability and latency SLOs cannot see a replica that answers quickly and wrongly: one
that loaded truncated weights during a model-load stall, or served stale features while
the pipeline lagged. Two checks catch that:

- **Golden set**: fixed inputs whose outputs are known (the reference model is
  deterministic, so they are computed here from the same seeded weights); every answer
  must match within a tolerance, and a miss names the input and the replica.
- **Drift** between a baseline sample of predictions and a later one: the Population
  Stability Index (bands: < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant) and the
  two-sample Kolmogorov-Smirnov test. Both are computed with numpy alone (scipy is not a
  dependency); the KS p-value is the asymptotic Kolmogorov distribution.

An empty sample or golden set measures nothing: "not measured", never stable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import httpx
import numpy as np

from inferchaos.probes.measure import FRACTION, Measure
from inferchaos.targets.local.golden import (CaseResult, GoldenCase, check_answer, default_rows,  # noqa: F401
                                            golden_set, infer_body)

PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25
NOT_MEASURED = "not measured: "

#: The observations model health yields, for SLO objectives.
MODEL_KEYS = ("golden_pass_rate", "golden_failures", "prediction_psi", "prediction_ks_pvalue")

REPLICA_HEADER = "x-inferchaos-replica"

DRIFT = (
    Measure("prediction_psi", "<=", "PSI", "population stability index of the answers' top-class probability, "
            "fault window (inject -> revert) against baseline"),
    Measure("prediction_ks_pvalue", ">=", "fraction", "two-sample Kolmogorov-Smirnov p-value of the same; low "
            "means the distribution moved", FRACTION),
)


# ---------------------------------------------------------------------- golden set
@dataclass(frozen=True)
class CanaryResult:
    measured: bool
    reason: str
    cases: tuple[CaseResult, ...] = ()

    @property
    def failures(self) -> tuple[CaseResult, ...]:
        return tuple(c for c in self.cases if not c.ok)

    @property
    def ok(self) -> bool:
        """True only when something was checked and all of it matched."""
        return self.measured and not self.failures

    def line(self) -> str:
        if not self.measured:
            return self.reason
        if not self.failures:
            return f"golden set: {len(self.cases)}/{len(self.cases)} answers match"
        return (f"golden set: {len(self.failures)}/{len(self.cases)} answers wrong: "
                + "; ".join(f"{c.name}: {c.detail}" for c in self.failures))


def run_canary(client: httpx.Client, cases: Sequence[GoldenCase], model_name: str = "mlp",
               atol: float = 1e-5, rtol: float = 1e-4) -> CanaryResult:
    """Ask every case, one request each (so a wrong replica is named), through `client`
    (its base_url: the LB or one replica). A request that gets no valid answer fails its
    case: an unreachable model is not a correct one."""
    if not cases:
        return CanaryResult(False, NOT_MEASURED + "the golden set is empty")
    results = []
    for case in cases:
        try:
            resp = client.post(f"/v2/models/{model_name}/infer", json=infer_body(case))
        except httpx.HTTPError as exc:
            results.append(CaseResult(case.name, False, f"no answer: {type(exc).__name__}: {exc}"))
            continue
        replica = resp.headers.get(REPLICA_HEADER)
        if resp.status_code != 200:
            results.append(CaseResult(case.name, False, f"HTTP {resp.status_code}: {resp.text[:120]}", replica))
            continue
        try:
            body = resp.json()
        except ValueError:
            body = None
        results.append(check_answer(case, body, replica, atol, rtol))
    return CanaryResult(True, "", tuple(results))


# ---------------------------------------------------------------------- drift
@dataclass(frozen=True)
class DriftResult:
    measured: bool
    reason: str
    baseline_n: int = 0
    current_n: int = 0
    psi: float | None = None
    #: "stable" | "moderate" | "significant"; "not measured" when nothing was.
    band: str = "not measured"
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    alpha: float = 0.05

    @property
    def drifted(self) -> bool:
        """Significant PSI, or KS rejects "same distribution" at `alpha`."""
        return self.measured and (self.band == "significant" or (self.ks_pvalue or 1.0) < self.alpha)

    def line(self) -> str:
        if not self.measured:
            return self.reason
        return (f"PSI {self.psi:.3f} ({self.band}), KS D={self.ks_statistic:.3f} p={self.ks_pvalue:.3g} "
                f"(n={self.baseline_n}/{self.current_n})")


def psi_band(value: float) -> str:
    if value < PSI_MODERATE:
        return "stable"
    return "moderate" if value <= PSI_SIGNIFICANT else "significant"


def psi(baseline: Sequence[float], current: Sequence[float], bins: int = 10, eps: float = 1e-4) -> float:
    """Population Stability Index over `bins` quantile bins of the baseline: the bins hold
    equal shares of the baseline, so the index weighs where the baseline actually lives.
    An empty bin counts as `eps` (otherwise one empty bin makes the index infinite)."""
    base, cur = np.asarray(baseline, dtype=np.float64), np.asarray(current, dtype=np.float64)
    if base.size == 0 or cur.size == 0:
        raise ValueError("PSI needs two non-empty samples")
    if bins < 2:
        raise ValueError(f"PSI needs at least 2 bins, got {bins}")
    cuts = np.unique(np.quantile(base, np.linspace(0, 1, bins + 1)[1:-1]))
    # Bins are right-closed: (cut[i-1], cut[i]]. A constant baseline still gets two bins.
    p = np.bincount(np.searchsorted(cuts, base, side="left"), minlength=cuts.size + 1) / base.size
    q = np.bincount(np.searchsorted(cuts, cur, side="left"), minlength=cuts.size + 1) / cur.size
    p, q = np.maximum(p, eps), np.maximum(q, eps)
    return float(np.sum((q - p) * np.log(q / p)))


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (what scipy calls `special.kolmogorov`).
    The alternating series converges fast for large x, the Jacobi-theta form for small x."""
    if x <= 0:
        return 1.0
    if x < 1.0:
        k = np.arange(1, 50)
        cdf = math.sqrt(2 * math.pi) / x * float(np.sum(np.exp(-((2 * k - 1) ** 2) * math.pi**2 / (8 * x * x))))
        return min(1.0, max(0.0, 1.0 - cdf))
    k = np.arange(1, 101)
    terms = (-1.0) ** (k - 1) * np.exp(-2.0 * k * k * x * x)
    return min(1.0, max(0.0, 2.0 * float(np.sum(terms))))


def ks_2samp(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: (D, asymptotic two-sided p-value). D is the largest
    gap between the two empirical CDFs; p = Q_KS(sqrt(n*m/(n+m)) * D)."""
    x, y = np.sort(np.asarray(a, dtype=np.float64)), np.sort(np.asarray(b, dtype=np.float64))
    n, m = x.size, y.size
    if n == 0 or m == 0:
        raise ValueError("KS needs two non-empty samples")
    pooled = np.concatenate([x, y])
    d = float(np.max(np.abs(np.searchsorted(x, pooled, side="right") / n
                            - np.searchsorted(y, pooled, side="right") / m)))
    return d, kolmogorov_sf(math.sqrt(n * m / (n + m)) * d)


def drift(baseline: Sequence[float], current: Sequence[float], bins: int = 10, alpha: float = 0.05) -> DriftResult:
    """Compare two samples of one prediction figure (e.g. the top-class probability)."""
    base, cur = np.asarray(baseline, dtype=np.float64).ravel(), np.asarray(current, dtype=np.float64).ravel()
    for label, sample in (("baseline", base), ("current", cur)):
        if sample.size == 0:
            return DriftResult(False, f"{NOT_MEASURED}the {label} sample is empty", base.size, cur.size)
        bad = int(np.count_nonzero(~np.isfinite(sample)))
        if bad:
            return DriftResult(False, f"{NOT_MEASURED}the {label} sample holds {bad} non-finite values",
                               base.size, cur.size)
    value = psi(base, cur, bins)
    d, p = ks_2samp(base, cur)
    return DriftResult(True, "", base.size, cur.size, value, psi_band(value), d, p, alpha)


def top_scores(body: object) -> list[float]:
    """The top-class probability of each row of an OIP answer: the figure whose
    distribution shifts when a model goes wrong (or goes stale). Empty for a bad body."""
    try:
        out = body["outputs"][0]  # type: ignore[index]
        probs = np.asarray(out["data"], dtype=np.float64).reshape(out["shape"])
    except (KeyError, IndexError, TypeError, ValueError):
        return []
    return probs.max(axis=1).tolist() if probs.ndim == 2 and probs.size else []


# ---------------------------------------------------------------------- observations
def observed_from_model_health(canary: CanaryResult | None = None,
                               drift_result: DriftResult | None = None) -> dict[str, float | None]:
    observed: dict[str, float | None] = {key: None for key in MODEL_KEYS}
    if canary is not None and canary.measured and canary.cases:
        observed["golden_failures"] = float(len(canary.failures))
        observed["golden_pass_rate"] = 1 - len(canary.failures) / len(canary.cases)
    if drift_result is not None and drift_result.measured:
        observed["prediction_psi"] = drift_result.psi
        observed["prediction_ks_pvalue"] = drift_result.ks_pvalue
    return observed


def reasons_from_model_health(canary: CanaryResult | None = None,
                              drift_result: DriftResult | None = None) -> dict[str, str]:
    """Why each missing value is missing, for `probes.verdict.judge` (which adds
    "not measured: " itself)."""
    reasons = {}
    if canary is None or not canary.measured:
        why = "no golden-set canary ran" if canary is None else canary.reason.removeprefix(NOT_MEASURED)
        reasons.update(golden_pass_rate=why, golden_failures=why)
    if drift_result is None or not drift_result.measured:
        why = "no drift check ran" if drift_result is None else drift_result.reason.removeprefix(NOT_MEASURED)
        reasons.update(prediction_psi=why, prediction_ks_pvalue=why)
    return reasons
