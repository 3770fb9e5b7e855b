"""The Open Inference Protocol (KServe v2) request body, parsed strictly.

A client mistake must be a 400 naming the mistake, never a 500 or a silently coerced
value: strings and booleans in `data` are refused rather than turned into numbers.
"""

from __future__ import annotations

import numpy as np

from inferchaos.targets.local import model as mdl


class BadRequest(ValueError):
    """A request the client got wrong: answered 400 with this text."""


def _flatten(data: object) -> list[float]:
    """Flat or nested lists of JSON numbers; strings and booleans are refused, not coerced."""
    out: list[float] = []
    stack = [data]
    while stack:
        x = stack.pop()
        if isinstance(x, list):
            stack.extend(reversed(x))
        elif isinstance(x, (int, float)) and not isinstance(x, bool):
            out.append(float(x))
        else:
            raise BadRequest(f"data must hold numbers, got {type(x).__name__}")
    return out


def parse_infer(body: object) -> tuple[str | None, np.ndarray]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise BadRequest("body must be an object with an 'inputs' list")
    if len(body["inputs"]) != 1 or not isinstance(body["inputs"][0], dict):
        raise BadRequest("exactly one input tensor named 'input' is expected")
    t = body["inputs"][0]
    if t.get("name") != "input":
        raise BadRequest(f"unknown input {t.get('name')!r}; expected 'input'")
    if t.get("datatype") != "FP32":
        raise BadRequest(f"input datatype must be FP32, got {t.get('datatype')!r}")
    shape = t.get("shape")
    if (not isinstance(shape, list) or len(shape) != 2 or not all(type(d) is int for d in shape)
            or shape[0] < 1 or shape[1] != mdl.INPUT_DIM):
        raise BadRequest(f"input shape must be [batch >= 1, {mdl.INPUT_DIM}], got {shape!r}")
    data = _flatten(t.get("data"))
    if len(data) != shape[0] * shape[1]:
        raise BadRequest(f"shape {shape} needs {shape[0] * shape[1]} values, data has {len(data)}")
    req_id = body.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise BadRequest("id must be a string")
    return req_id, np.asarray(data, dtype=np.float32).reshape(shape)
