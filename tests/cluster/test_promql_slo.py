"""PromQL objectives: parsed from the SLO file, asked of a real Prometheus that scrapes the
local cluster (and follows its replicas as they are replaced), judged like every SLO.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from inferchaos.ground.errors import UsageError
from inferchaos.probes.slo import load_slo
from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.waiting import wait_for
from tests.support.leftovers import module_cluster
from tests.support.phases import slo_set
from tests.support.inner import PYTEST

REPO = Path(__file__).resolve().parents[2]
SHORT = slo_set()
P99 = "histogram_quantile(0.99, sum by (le) (rate(vllm:e2e_request_latency_seconds_bucket[5s])))"


def slo_file(tmp: Path, body: str) -> Path:
    path = tmp / "slo.toml"
    path.write_text(body)
    return path


# ----------------------------------------------------------------------------- the file
def test_promql_objectives_merge_defaults_and_the_experiment(tmp_path):
    path = slo_file(tmp_path, f"""
[defaults.promql.server_p99_s]
query = "{P99}"
op = "<="
value = 2
unit = "s"

[experiments.replica_crash.promql.server_p99_s]
query = "{P99}"
op = "<="
value = 0.5
unit = "s"
reduce = "mean"

[experiments.replica_crash.promql.running_min]
query = "sum(vllm:num_requests_running)"
op = ">="
value = 0
optional = true
""")
    crash = {p.key: p for p in load_slo(path, "replica_crash").promql}
    other = {p.key: p for p in load_slo(path, "gpu_oom").promql}
    assert crash["server_p99_s"].value == 0.5 and crash["server_p99_s"].reduce == "mean"
    assert crash["running_min"].optional and crash["running_min"].objective.target() == ">= 0"
    assert other["server_p99_s"].value == 2 and set(other) == {"server_p99_s"}
    assert crash["server_p99_s"].objective.target() == "<= 0.5 s"


@pytest.mark.parametrize("body, words", [
    ('[defaults.promql.p99_ms]\nquery = "up"\nop = "<="\nvalue = 1\n', ["built-in SLO key", "p99_ms"]),
    ('[defaults.promql.x]\nquery = "up"\nop = "<"\nvalue = 1\n', ["op", "'<'"]),
    ('[defaults.promql.x]\nop = "<="\nvalue = 1\n', ["missing 'query'"]),
    ('[defaults.promql.x]\nquery = "up"\nop = "<="\nvalue = "fast"\n', ["value", "expected a number"]),
    ('[defaults.promql.x]\nquery = "up"\nop = "<="\nvalue = 1\nreduce = "p99"\n', ["reduce", "max, min, mean, last"]),
    ('[defaults.promql.x]\nquery = "up"\nop = "<="\nvalue = 1\nqeury = "up"\n', ["qeury", "did you mean 'query'"]),
    ('[defaults.promql.x]\nquery = ""\nop = "<="\nvalue = 1\n', ["query", "PromQL expression"]),
])
def test_a_bad_promql_objective_is_one_line_naming_it(tmp_path, body, words):
    with pytest.raises(UsageError) as err:
        load_slo(slo_file(tmp_path, body), "replica_crash")
    text = str(err.value)
    assert "\n" not in text and "[defaults.promql." in text
    for word in words:
        assert word in text, text


# ----------------------------------------------------------------------------- a real Prometheus


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("prometheus") is None:
        pytest.skip("no prometheus binary (Debian: apt-get install -y prometheus)")
    yield from module_cluster(tmp_path_factory, "promql",
                              ClusterSpec(replicas=2, provisioning_delay_s=0.5, prometheus=True))


def scraped_replicas(cluster: LocalCluster) -> set[str]:
    body = httpx.get(f"{cluster.state.prometheus_url}/api/v1/targets", timeout=5).json()
    return {t["labels"]["replica"] for t in body["data"]["activeTargets"]
            if t["labels"].get("job") == "replicas" and t["health"] == "up"}


@pytest.mark.cluster
def test_the_cluster_s_prometheus_follows_replicas_as_they_are_replaced(cluster):
    import os
    import signal

    wait_for(lambda: scraped_replicas(cluster) == {r.name for r in cluster.replicas()}, 30,
             "Prometheus scraping every replica")
    victim = cluster.replicas()[0]
    os.killpg(victim.pgid, signal.SIGKILL)
    wait_for(lambda: victim.name not in {r.name for r in cluster.replicas()}, 30, "the supervisor to see it dead")
    cluster.wait_steady(60)
    now = {r.name for r in cluster.replicas()}
    assert victim.name not in now
    wait_for(lambda: scraped_replicas(cluster) == now, 30, "Prometheus scraping the replacement, not the dead one")


def run_chaos(cluster: LocalCluster, tmp: Path, slo: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    argv = [*PYTEST, "experiments/test_replica_crash.py", "--state-dir", str(cluster.state_dir), "--ledger",
            str(tmp / "ledger.jsonl"), "--chaos-report", str(tmp / "report"), "--slo", str(slo), *SHORT, *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=REPO)
    summary = tmp / "report" / "summary.json"
    assert summary.is_file(), proc.stdout[-3000:] + proc.stderr[-2000:]
    (e,) = json.loads(summary.read_text())["experiments"]
    return proc, {s["name"]: s for s in e["slos"]}


PROMQL = f"""
[experiments.replica_crash.slo]
failover_s = 5

[experiments.replica_crash.promql.server_p99_s]
query = "{P99}"
op = "<="
value = {{p99}}
unit = "s"

[experiments.replica_crash.promql.fault_flagged]
# the runner's own metric, scraped by the cluster's Prometheus: dashboards see the window
query = 'max(inferchaos_fault_active{{{{fault="replica_crash"}}}})'
op = ">="
value = 1

[experiments.replica_crash.promql.ghost]
query = "sum(no_such_metric_anywhere)"
op = "<="
value = 1
optional = {{ghost_optional}}
"""


@pytest.mark.cluster
def test_promql_objectives_pass_and_a_planted_breach_fails_by_name(cluster, tmp_path):
    cluster.wait_steady(60)
    ok = slo_file(tmp_path, PROMQL.format(p99=2, ghost_optional="true"))
    proc, slos = run_chaos(cluster, tmp_path / "ok", ok)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert slos["server_p99_s"]["ok"] and 0 < slos["server_p99_s"]["observed"] < 2, slos["server_p99_s"]
    assert slos["fault_flagged"]["ok"] and slos["fault_flagged"]["observed"] == 1, slos["fault_flagged"]
    assert slos["ghost"]["ok"] and slos["ghost"]["observed"] is None
    assert "no data" in slos["ghost"]["detail"] and "no_such_metric_anywhere" in slos["ghost"]["detail"]

    cluster.wait_steady(60)
    planted = slo_file(tmp_path, PROMQL.format(p99=0.000001, ghost_optional="false"))
    proc, slos = run_chaos(cluster, tmp_path / "planted", planted)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert not slos["server_p99_s"]["ok"] and slos["server_p99_s"]["observed"] > 0.000001
    assert not slos["ghost"]["ok"], "no data is a failure, never a pass"
    assert "BREACHED server_p99_s <= 1e-06 s" in out and "BREACHED ghost" in out


@pytest.mark.cluster
def test_without_a_prometheus_the_objective_says_how_to_get_one(tmp_path):
    state_dir = tmp_path / "plain"
    with LocalCluster(ClusterSpec(replicas=2, provisioning_delay_s=0.5), state_dir) as plain:
        proc, slos = run_chaos(plain, tmp_path, slo_file(tmp_path, PROMQL.format(p99=2, ghost_optional="true")))
    assert proc.returncode == 1, proc.stdout[-3000:]
    detail = slos["server_p99_s"]["detail"]
    assert not slos["server_p99_s"]["ok"] and "no Prometheus to ask" in detail and "--prometheus URL" in detail
