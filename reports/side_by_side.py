"""Experiments side by side on one time axis (seconds since each one's fault began): the
client's p99 and the replicas serving. Made for the autoscaling experiments — no pool, a
warm pool, a pre-heat — where the question is which way got capacity there first."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


COLOURS = ("#1e88e5", "#e53935", "#43a047", "#8e24aa", "#fb8c00")


def plot_side_by_side(experiments: Sequence[dict], path: Path) -> Path:
    fig, (lat, reps) = plt.subplots(2, 1, figsize=(11, 6), dpi=100, sharex=True,
                                    gridspec_kw={"height_ratios": [3, 2]})
    try:
        for colour, e in zip(COLOURS, experiments):
            inject = e["fault_window"]["inject_s"]
            revert = e["fault_window"]["revert_s"]
            end = max(p["end_s"] for p in e["phases"])
            buckets = (e.get("series") or {}).get("buckets", [])
            lat.plot([b["t"] - inject for b in buckets], [b["p99_ms"] for b in buckets], drawstyle="steps-post",
                     color=colour, label=e["id"])
            samples = e["autoscaling"]["samples"] if e.get("autoscaling") else []
            if samples:
                reps.step([s["t"] - inject for s in samples] + [end - inject],
                          [s["ready"] for s in samples] + [samples[-1]["ready"]], where="post", color=colour,
                          label=f"{e['id']}: ready")
            if revert is not None:
                lat.axvline(revert - inject, color=colour, linestyle=":", linewidth=0.8)
        for ax in (lat, reps):
            ax.axvline(0, color="#212121", linewidth=1)
            ax.grid(True, alpha=0.3)
        lat.set_ylabel("p99 (ms)")
        lat.legend(loc="upper right", fontsize=8)
        reps.set_ylabel("replicas ready")
        reps.set_xlabel("seconds since the fault began (dotted: its revert)")
        fig.suptitle("side by side: p99 and replicas ready, from the moment each fault began", fontsize=12)
        fig.tight_layout(rect=(0, 0, 1, 0.96))
        fig.savefig(path, format="png")
        return path
    finally:
        plt.close(fig)
