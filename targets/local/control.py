"""Desired-state overrides: what a fault or an operator changes on a running cluster.

The supervisor re-reads `<state dir>/desired.json` every tick and applies it, the way a
controller follows edits to a Deployment. A fault that changes, say, the provisioning
delay records the previous values in the ledger and writes them back on revert, so the
undo is data that `inferchaos recover` can replay after a crash.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

#: Keys that may be overridden at runtime, with their types.
DESIRED_KEYS: dict[str, type] = {
    "replicas": int, "warm_pool": int, "provisioning_delay_s": float,
    # autoscaling (targets/local/autoscaler.py): on while autoscale_target is set
    "autoscale_target": float, "autoscale_min": int, "autoscale_max": int, "autoscale_metric": str,
    "autoscale_polling_s": float, "autoscale_up_window_s": float, "autoscale_cooldown_s": float,
    # pre-heat: at least this many replicas serving, ahead of a known spike
    "preheat": int,
    # cuda_errors: device -> {"shim": path, "trigger": path}, put in the env of replicas started there
    "cuda_faults": dict,
}


def desired_path(state_dir: Path | str) -> Path:
    return Path(state_dir) / "desired.json"


def read_desired(state_dir: Path | str) -> dict:
    try:
        data = json.loads(desired_path(state_dir).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {k: DESIRED_KEYS[k](v) for k, v in data.items() if k in DESIRED_KEYS and v is not None}


def set_desired(state_dir: Path | str, **values: object) -> dict:
    """Merge `values` into the overrides (None removes a key). Returns the previous overrides."""
    unknown = set(values) - set(DESIRED_KEYS)
    if unknown:
        raise KeyError(f"not a runtime setting: {', '.join(sorted(unknown))}")
    previous = read_desired(state_dir)
    merged = {**previous, **values}
    merged = {k: v for k, v in merged.items() if v is not None}
    path = desired_path(state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged))
    os.replace(tmp, path)
    return previous


def replace_desired(state_dir: Path | str, values: dict) -> None:
    """Write back a previous set of overrides exactly (the undo of `set_desired`)."""
    path = desired_path(state_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({k: v for k, v in values.items() if k in DESIRED_KEYS}))
    os.replace(tmp, path)
