"""A pytest plugin for the benchmarks: the runner's own peak RSS (VmHWM), after each test
and at the end of the session, written as JSON to $INFERCHAOS_BENCH_RSS (one object).

    PYTHONPATH=bench pytest -p runner_rss_plugin experiments/ ...

Only the pytest process is measured: locust, the GPU hog and the cluster are processes of
their own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

_after: list[dict] = []


def _status_kb(field: str) -> int | None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


def pytest_runtest_logreport(report) -> None:  # type: ignore[no-untyped-def]
    if report.when == "teardown":
        _after.append({"test": report.nodeid, "vmhwm_kb": _status_kb("VmHWM"), "vmrss_kb": _status_kb("VmRSS")})


def pytest_unconfigure(config) -> None:  # type: ignore[no-untyped-def]
    out = os.environ.get("INFERCHAOS_BENCH_RSS")
    if out:
        Path(out).write_text(json.dumps({"pid": os.getpid(), "vmhwm_kb": _status_kb("VmHWM"),
                                         "vmrss_kb": _status_kb("VmRSS"), "after_each_test": _after}))
