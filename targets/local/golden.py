"""The reference model's known answers: named inputs and the outputs the seeded weights the
model store serves give them, in FP32 as the server computes them, and how one answer is
judged against them. Target knowledge: the golden-set canary (probes/) asks with it, and the
wrong_answers fault (faults/local/) proves its landing with the same check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from inferchaos.targets.local import model as mdl


@dataclass(frozen=True)
class GoldenCase:
    name: str
    #: one input row of `INPUT_DIM` values, exactly representable in FP32.
    inputs: tuple[float, ...]
    expected: tuple[float, ...]


@dataclass(frozen=True)
class CaseResult:
    name: str
    ok: bool
    #: e.g. "max |error| 3e-08" or "output[2] 0.41 != expected 0.12 (replica r1)".
    detail: str
    replica: str | None = None


def default_rows() -> dict[str, list[float]]:
    """Named inputs that exercise the model differently: flat, ramps, signs, and noise.
    No all-zero row: with zero biases it gets the uniform answer whatever the weights, so
    it could not tell a wrong model from the right one."""
    rng = np.random.default_rng(20261101)
    rows = {
        "descending": [1.0 - 0.1 * i for i in range(mdl.INPUT_DIM)],
        "ones": [1.0] * mdl.INPUT_DIM,
        "ramp": [0.05 * i for i in range(mdl.INPUT_DIM)],
        "alternating": [(-1.0) ** i for i in range(mdl.INPUT_DIM)],
    }
    for k in range(4):
        rows[f"seeded-{k}"] = rng.standard_normal(mdl.INPUT_DIM).tolist()
    return rows


def golden_set(model_name: str = "mlp", rows: dict[str, Sequence[float]] | None = None) -> tuple[GoldenCase, ...]:
    """Cases with outputs computed from the seeded weights the model store serves, in FP32
    as the server computes them."""
    model = mdl.Model(model_name, mdl.generate_weights(model_name))
    cases = []
    for name, row in (rows if rows is not None else default_rows()).items():
        x = np.asarray(row, dtype=np.float32)
        if x.shape != (mdl.INPUT_DIM,):
            raise ValueError(f"golden input {name!r} must hold {mdl.INPUT_DIM} values, got {x.size}")
        y = model.forward(x[None, :])[0]
        cases.append(GoldenCase(name, tuple(float(v) for v in x), tuple(float(v) for v in y)))
    return tuple(cases)


def infer_body(case: GoldenCase) -> dict:
    """The Open Inference Protocol request for one case."""
    return {"id": f"golden-{case.name}",
            "inputs": [{"name": "input", "shape": [1, len(case.inputs)], "datatype": "FP32",
                        "data": list(case.inputs)}]}


def check_answer(case: GoldenCase, body: object, replica: str | None = None,
                 atol: float = 1e-5, rtol: float = 1e-4) -> CaseResult:
    """Judge one answer body: a valid OIP response whose outputs match within
    |got - expected| <= atol + rtol * |expected|, everywhere."""
    where = f" (replica {replica})" if replica else ""
    try:
        data = body["outputs"][0]["data"]  # type: ignore[index]
        got = np.asarray(data, dtype=np.float64).reshape(-1)
    except (KeyError, IndexError, TypeError, ValueError):
        return CaseResult(case.name, False, f"not an inference answer{where}", replica)
    expected = np.asarray(case.expected)
    if got.shape != expected.shape:
        return CaseResult(case.name, False, f"{got.size} outputs, expected {expected.size}{where}", replica)
    err = np.abs(got - expected)
    bad = ~(err <= atol + rtol * np.abs(expected))  # NaN is bad
    if bad.any():
        i = int(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf), -1)))
        return CaseResult(case.name, False, f"output[{i}] {got[i]:.6g} != expected {expected[i]:.6g}{where}",
                          replica)
    return CaseResult(case.name, True, f"max |error| {float(err.max()):.2g}{where}", replica)
