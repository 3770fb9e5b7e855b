"""Model health: the golden-set canary against a real reference server, and drift (PSI, KS)
on known samples, cross-checked against scipy when it happens to be installed."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Iterator

import httpx
import numpy as np
import pytest

from inferchaos.probes.model_health import (
    MODEL_KEYS,
    CanaryResult,
    GoldenCase,
    check_answer,
    drift,
    golden_set,
    infer_body,
    kolmogorov_sf,
    ks_2samp,
    observed_from_model_health,
    psi,
    psi_band,
    reasons_from_model_health,
    run_canary,
    top_scores,
)
from inferchaos.probes.slo import Objective
from inferchaos.probes.verdict import judge, verdict
from inferchaos.targets.local import model as mdl
from tests.support.waiting import wait_for
from inferchaos.ground.ports import free_port
from inferchaos.targets.local.processes import end_groups, spawn


def answer(case: GoldenCase) -> dict:
    """What a correct server answers for one case."""
    return {"model_name": "mlp", "outputs": [{"name": "probabilities", "shape": [1, mdl.OUTPUT_DIM],
                                              "datatype": "FP32", "data": list(case.expected)}]}


# ---------------------------------------------------------------------- golden set, no server
def test_golden_set_is_deterministic_and_matches_the_model():
    cases = golden_set()
    assert golden_set() == cases and len(cases) == 8
    model = mdl.Model("mlp", mdl.generate_weights("mlp"))
    ramp = next(c for c in cases if c.name == "ramp")
    assert np.allclose(ramp.expected, model.forward(np.asarray([ramp.inputs], dtype=np.float32))[0], atol=0)
    assert all(math.isclose(sum(c.expected), 1.0, rel_tol=1e-5) for c in cases)
    assert golden_set("other") != cases  # another model, other answers


def test_exact_outputs_pass_and_a_perturbed_one_fails_naming_the_input():
    cases = golden_set()
    assert all(check_answer(c, answer(c)).ok for c in cases)
    body = copy.deepcopy(answer(cases[2]))
    body["outputs"][0]["data"][3] += 0.01
    result = check_answer(cases[2], body, replica="r1")
    assert not result.ok and result.name == cases[2].name == "ramp"
    assert result.detail.startswith("output[3]") and "replica r1" in result.detail
    canary = CanaryResult(True, "", (check_answer(cases[0], answer(cases[0])), result))
    assert not canary.ok and "ramp: output[3]" in canary.line()


@pytest.mark.parametrize("body", [None, {}, {"outputs": []}, {"outputs": [{"data": [0.1, 0.2]}]},
                                  {"outputs": [{"data": [float("nan")] * mdl.OUTPUT_DIM}]}])
def test_invalid_answers_fail(body):
    assert not check_answer(golden_set()[0], body).ok


def test_empty_golden_set_is_not_measured():
    with httpx.Client(base_url="http://127.0.0.1:9") as client:
        canary = run_canary(client, [])
    assert not canary.measured and not canary.ok and canary.reason == "not measured: the golden set is empty"
    results = judge([Objective("golden_pass_rate", ">=", 1.0, "fraction")], observed_from_model_health(canary),
                    reasons_from_model_health(canary))
    assert verdict(results) == "fail" and results[0].detail == "not measured: the golden set is empty"


def test_unreachable_server_fails_every_case():
    with httpx.Client(base_url=f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        canary = run_canary(client, golden_set()[:2])
    assert canary.measured and len(canary.failures) == 2 and "no answer" in canary.failures[0].detail


# ---------------------------------------------------------------------- golden set, real server
@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("server")
    ports = {name: free_port() for name in ("modelstore", "featurestore", "server")}
    url = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    procs = [spawn([sys.executable, "-m", f"inferchaos.targets.local.{m}", "--port", str(ports[m])], tmp / f"{m}.log")
             for m in ("modelstore", "featurestore")]
    procs.append(spawn([sys.executable, "-m", "inferchaos.targets.local.server", "--port", str(ports["server"]),
                        "--name", "golden-replica", "--model-store", url["modelstore"],
                        "--feature-store", url["featurestore"], "--batch-latency-ms", "1"], tmp / "server.log"))
    try:
        def ready() -> bool:
            assert all(p.poll() is None for p in procs), (tmp / "server.log").read_text()
            try:
                return httpx.get(f"{url['server']}/v2/health/ready", timeout=1).status_code == 200
            except httpx.TransportError:
                return False
        wait_for(ready, 30, "the reference server to be ready")
        yield url["server"]
    finally:
        end_groups([p.pid for p in procs], grace_s=5)
        for p in procs:
            p.wait(5)
    assert not Path(tmp / "server.log").read_text().count("Traceback")


def test_canary_passes_against_the_real_server(server):
    with httpx.Client(base_url=server, timeout=10) as client:
        canary = run_canary(client, golden_set())
    assert canary.ok, canary.line()
    assert {c.replica for c in canary.cases} == {"golden-replica"}
    observed = observed_from_model_health(canary)
    assert observed["golden_pass_rate"] == 1.0 and observed["golden_failures"] == 0
    assert reasons_from_model_health(canary)["prediction_psi"] == "no drift check ran"


def test_canary_names_the_input_the_server_gets_wrong(server):
    cases = list(golden_set())
    wrong = cases[5]
    cases[5] = GoldenCase(wrong.name, wrong.inputs, (wrong.expected[0] + 0.05,) + wrong.expected[1:])
    with httpx.Client(base_url=server, timeout=10) as client:
        canary = run_canary(client, cases)
        other_model = run_canary(client, golden_set("other-weights"))  # as if the wrong weights were loaded
    assert [c.name for c in canary.failures] == [wrong.name]
    assert "output[0]" in canary.failures[0].detail and "golden-replica" in canary.failures[0].detail
    assert len(other_model.failures) == len(other_model.cases)
    results = judge([Objective("golden_failures", "<=", 0, "count")], observed_from_model_health(canary))
    assert verdict(results) == "fail" and "observed 1" in results[0].detail


def test_top_scores_of_a_real_batch(server):
    rows = [list(c.inputs) for c in golden_set()]
    body = {"inputs": [{"name": "input", "shape": [len(rows), 16], "datatype": "FP32", "data": rows}]}
    resp = httpx.post(f"{server}/v2/models/mlp/infer", json=body, timeout=10)
    scores = top_scores(resp.json())
    assert scores == pytest.approx([max(c.expected) for c in golden_set()], abs=1e-6)
    assert top_scores({"outputs": []}) == [] and infer_body(golden_set()[0])["inputs"][0]["shape"] == [1, 16]


# ---------------------------------------------------------------------- drift
RNG = np.random.default_rng(7)
BASE = RNG.normal(0.0, 1.0, 5000)
SAME = RNG.normal(0.0, 1.0, 5000)
SHIFTED = RNG.normal(0.8, 1.0, 5000)


def test_identical_distributions_are_stable():
    result = drift(BASE, SAME)
    assert result.measured and result.band == "stable" and result.psi < 0.1
    assert result.ks_pvalue > 0.05 and not result.drifted
    assert drift(BASE, BASE).psi == pytest.approx(0.0, abs=1e-12) and drift(BASE, BASE).ks_statistic == 0


def test_shifted_distribution_is_significant_on_both_tests():
    result = drift(BASE, SHIFTED)
    assert result.band == "significant" and result.psi > 0.25
    assert result.ks_statistic > 0.2 and result.ks_pvalue < 1e-6 and result.drifted
    observed = observed_from_model_health(drift_result=result)
    results = judge([Objective("prediction_psi", "<=", 0.25, "index"),
                     Objective("prediction_ks_pvalue", ">=", 0.05, "p")], observed)
    assert verdict(results) == "fail" and not any(r.ok for r in results)
    assert "PSI" in result.line() and "significant" in result.line()


def test_psi_bands_and_a_moderate_shift():
    assert [psi_band(v) for v in (0.0, 0.099, 0.1, 0.25, 0.2501)] == [
        "stable", "stable", "moderate", "moderate", "significant"]
    assert psi_band(psi(BASE, np.random.default_rng(3).normal(0.35, 1.0, 5000))) == "moderate"


def test_psi_handles_empty_bins_and_a_constant_baseline():
    value = psi(BASE, np.full(100, 10.0))  # everything in the top bin, nine empty bins
    assert math.isfinite(value) and value > 1
    assert psi(np.full(100, 0.5), np.full(100, 0.5)) == 0.0
    assert psi(np.full(100, 0.5), np.full(100, 0.9)) > 1  # a constant baseline still sees a shift


@pytest.mark.parametrize("baseline, current, words", [
    ([], [0.1, 0.2], "the baseline sample is empty"),
    ([0.1, 0.2], [], "the current sample is empty"),
    ([0.1, float("nan")], [0.1], "the baseline sample holds 1 non-finite values"),
])
def test_empty_or_invalid_samples_are_not_measured(baseline, current, words):
    result = drift(baseline, current)
    assert not result.measured and not result.drifted and result.band == "not measured"
    assert result.reason == f"not measured: {words}"
    reasons = reasons_from_model_health(drift_result=result)
    assert reasons["prediction_psi"] == words
    assert observed_from_model_health(drift_result=result) == {key: None for key in MODEL_KEYS}


def test_kolmogorov_distribution_known_values():
    assert kolmogorov_sf(0) == 1.0 and kolmogorov_sf(10) < 1e-80
    assert kolmogorov_sf(1.3581) == pytest.approx(0.05, abs=1e-4)  # the classic 5% critical value
    assert kolmogorov_sf(1.6276) == pytest.approx(0.01, abs=1e-4)
    xs = np.linspace(0.05, 3, 60)
    values = [kolmogorov_sf(x) for x in xs]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone, no seam at x = 1
    assert kolmogorov_sf(0.999999) == pytest.approx(kolmogorov_sf(1.0), abs=1e-5)


def test_ks_statistic_by_hand():
    assert ks_2samp([1, 2, 3], [1, 2, 3])[0] == 0
    assert ks_2samp([1, 2, 3], [4, 5, 6])[0] == 1
    assert ks_2samp([1, 2, 3, 4], [3, 4, 5, 6])[0] == 0.5


def test_against_scipy_when_installed():
    stats = pytest.importorskip("scipy.stats", reason="scipy is not installed: the cross-check is optional")
    special = pytest.importorskip("scipy.special")
    for x in (0.1, 0.3, 0.5, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0):
        assert kolmogorov_sf(x) == pytest.approx(float(special.kolmogorov(x)), abs=1e-12)
    rng = np.random.default_rng(11)
    for a, b in ((BASE, SAME), (BASE, SHIFTED), (rng.normal(size=300), rng.normal(0.1, 1.0, size=400)),
                 (rng.exponential(size=200), rng.exponential(1.3, size=250))):
        d, p = ks_2samp(a, b)
        ref = stats.ks_2samp(a, b, method="asymp")
        assert d == pytest.approx(ref.statistic, abs=1e-12)
        # scipy's "asymp" uses kstwo at n*m/(n+m) rounded; the Kolmogorov limit is close to it.
        assert p == pytest.approx(ref.pvalue, abs=0.02)
