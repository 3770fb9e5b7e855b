"""The SLO file's PromQL objectives as a probe: each query over inject -> end, asked once
Prometheus has scraped the last second of the run. The keys are the file's own, so the probe
declares no Measure: the vocabulary is the team's, not ours."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from inferchaos.probes.probe import BaseProbe, Measurement, RunView
from inferchaos.probes.prometheus import PrometheusClient, PromSlo, observe_all

NO_PROMETHEUS = ("no Prometheus to ask: give --prometheus URL, or a local cluster with one (inferchaos up "
                 "--prometheus; the session's own cluster has one when the prometheus binary is installed)")


@dataclass
class PromQLProbe(BaseProbe):
    name: str = "promql"
    #: the SLO file's PromObjective entries (probes.slo).
    objectives: Sequence[Any] = ()
    url: str | None = None
    #: how long after the run's end Prometheus is given to scrape it.
    scrape_s: float = 2.0

    def __post_init__(self) -> None:
        self.keys = tuple(o.key for o in self.objectives)

    def observe(self, run: RunView) -> list[Measurement]:
        if not self.objectives:
            return []
        if not self.url:
            return [Measurement(k, None, NO_PROMETHEUS) for k in self.keys]
        start, end = (run.wall(t) for t in run.span("after_inject"))
        time.sleep(max(0.0, end + self.scrape_s - time.time()))
        with PrometheusClient(self.url, retry_for_s=5.0) as client:
            values, why = observe_all([PromSlo(o.key, o.query, o.reduce) for o in self.objectives], client, start, end)
        return [Measurement(k, values.get(k), why.get(k)) for k in self.keys]
