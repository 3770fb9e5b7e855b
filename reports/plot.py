"""The timeline plot: latency, throughput, errors and the LB's view, the fault window shaded.

A PNG a person reads in a few seconds: did the tail move when the fault hit, did errors
appear, when did HAProxy take the replica out and put a new one in, and did it all come
back after the revert. The PNG carries its own geometry (where the time axis lies in
pixels) and the fault window as text metadata, so a test can check that the shaded band
sits exactly where the ledger says the fault was.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display anywhere this runs; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402

from inferchaos.reports.timeline import Timeline  # noqa: E402

#: the fault window's band colour (RGB); tests look for it in the "fault" strip.
FAULT_RGB = (229, 115, 115)
STATE_COLOURS = {"running": "#4caf50", "starting": "#a5d6a7", "stopping": "#ffb74d", "stopped": "#e53935",
                 "maint": "#9e9e9e"}
PHASE_STYLE = {"color": "#555555", "linestyle": ":", "linewidth": 0.9}
METADATA_KEY = "inferchaos"


@dataclass(frozen=True)
class Geometry:
    """Where things are in the PNG, in image pixels (origin top left)."""

    width: int
    height: int
    #: x pixel of t = 0 s and pixels per second, on every axis (they share x).
    x0_px: float
    px_per_s: float
    #: the fault strip's rows (top, bottom), where only the band is drawn.
    strip_rows: tuple[int, int]
    fault_window: tuple[float, float] | None

    def x_of(self, t: float) -> float:
        return self.x0_px + t * self.px_per_s


def plot(tl: Timeline, path: Path, dpi: int = 100) -> Geometry:
    fig, axes = plt.subplots(4, 1, figsize=(11, 7.5), dpi=dpi, sharex=True,
                             gridspec_kw={"height_ratios": [0.35, 3, 2, 1.6]})
    strip, lat, thr, lb = axes
    try:
        _strip(strip, tl)
        _latency(lat, tl)
        _throughput(thr, tl)
        _lb(lb, tl)
        for ax in axes[1:]:
            if tl.fault_window:
                ax.axvspan(*tl.fault_window, color=_hex(FAULT_RGB), alpha=0.18, linewidth=0, zorder=0)
            for _, start, _end in tl.phases[1:]:
                ax.axvline(start, **PHASE_STYLE)
            ax.grid(True, axis="y", alpha=0.3)
        lb.set_xlim(0, max(tl.end, 1.0))
        lb.set_xlabel("seconds since the run started")
        fig.suptitle(f"{tl.experiment}  ·  fault {tl.fault}  ·  {tl.verdict.upper()}", fontsize=12,
                     color="#2e7d32" if tl.verdict == "pass" else "#c62828")
        fig.tight_layout(rect=(0, 0, 1, 0.97))
        fig.canvas.draw()
        geometry = _geometry(fig, strip, tl)
        fig.savefig(path, format="png", dpi=dpi, metadata={METADATA_KEY: json.dumps(asdict(geometry))})
        return geometry
    finally:
        plt.close(fig)


def read_geometry(path: Path) -> Geometry:
    """The geometry a PNG of ours carries (Pillow reads PNG text chunks)."""
    from PIL import Image

    with Image.open(path) as im:
        d = json.loads(im.text[METADATA_KEY])
    return Geometry(d["width"], d["height"], d["x0_px"], d["px_per_s"], tuple(d["strip_rows"]),
                    tuple(d["fault_window"]) if d["fault_window"] else None)


def _strip(ax, tl: Timeline) -> None:  # type: ignore[no-untyped-def]
    """A band with nothing else in it: the fault window, and the phase names above it."""
    ax.set_ylim(0, 1)
    ax.set_yticks([])
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    if tl.fault_window:
        ax.axvspan(*tl.fault_window, color=_hex(FAULT_RGB), linewidth=0)
    for name, start, end in tl.phases:
        ax.text((start + end) / 2 if end > start else start, 1.15, name, ha="center", va="bottom", fontsize=8,
                color="#333333", transform=ax.get_xaxis_transform())
    ax.set_ylabel("fault", rotation=0, ha="right", va="center", fontsize=9)


def _latency(ax, tl: Timeline) -> None:  # type: ignore[no-untyped-def]
    ts = [b.t for b in tl.buckets]
    ax.plot(ts, [b.p50_ms for b in tl.buckets], label="p50", color="#1e88e5", drawstyle="steps-post")
    ax.plot(ts, [b.p99_ms for b in tl.buckets], label="p99", color="#8e24aa", drawstyle="steps-post")
    values = [v for b in tl.buckets for v in (b.p50_ms, b.p99_ms) if v]
    if values and max(values) / max(min(values), 1e-3) > 50:
        ax.set_yscale("log")
    ax.set_ylabel("latency (ms)")
    ax.legend(loc="upper right", fontsize=8)


def _throughput(ax, tl: Timeline) -> None:  # type: ignore[no-untyped-def]
    ts = [b.t for b in tl.buckets]
    ax.plot(ts, [b.rps for b in tl.buckets], label="requests/s", color="#00897b", drawstyle="steps-post")
    ax.bar(ts, [b.errors_per_s for b in tl.buckets], width=1.0, align="edge", color="#e53935", alpha=0.8,
           label="errors/s")
    ax.set_ylabel("per second")
    ax.legend(loc="upper right", fontsize=8)


def _lb(ax, tl: Timeline) -> None:  # type: ignore[no-untyped-def]
    servers = list(tl.lb)
    for i, server in enumerate(servers):
        for span in tl.lb[server]:
            ax.broken_barh([(span.start, span.end - span.start)], (i - 0.35, 0.7),
                           color=STATE_COLOURS.get(span.state, "#bdbdbd"), linewidth=0)
    ax.set_yticks(range(len(servers)), servers, fontsize=8)
    ax.set_ylim(-0.6, max(len(servers), 1) - 0.4)
    ax.set_ylabel("LB servers")
    for i, mark in enumerate(tl.marks):  # labels staggered: a death and its ejection are often ms apart
        ax.axvline(mark.t, color="#212121", linewidth=0.8, linestyle="--")
        ax.annotate(f" {mark.label}", (mark.t, 0.97 - 0.3 * (i % 3)), xycoords=("data", "axes fraction"),
                    fontsize=7, va="top", ha="left", color="#212121",
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in STATE_COLOURS.values()]
    ax.legend(handles, list(STATE_COLOURS), loc="upper left", fontsize=7, ncol=5, bbox_to_anchor=(0, -0.35))


def _geometry(fig, strip, tl: Timeline) -> Geometry:  # type: ignore[no-untyped-def]
    width, height = fig.canvas.get_width_height()
    (x0, _), (x1, _) = strip.transData.transform([(0, 0), (1, 0)])
    bbox = strip.get_window_extent()
    # display y grows upwards; image rows grow downwards
    rows = (int(round(height - bbox.y1)), int(round(height - bbox.y0)))
    return Geometry(width, height, float(x0), float(x1 - x0), rows, tl.fault_window)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % rgb
