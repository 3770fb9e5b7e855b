"""Autoscaling, verified: the decision logic on its own, the local autoscaler on a real
cluster under real load (scale-out, cooldown, pre-heat), the planted breach with the
autoscaler off, and the Kubernetes view of an HPA and a ScaledObject through the real client.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from inferchaos.ground.errors import UsageError
from inferchaos.load.burst import burst
from inferchaos.targets.kubernetes import KubeSettings, KubeTarget
from inferchaos.targets.local import ClusterSpec
from tests.support.waiting import wait_for
from inferchaos.targets.local.autoscaler import Autoscaler, Policy, metric_sum
from inferchaos.targets.local.control import set_desired
from tests.fakekube import FakeKube
from tests.fakekube.cluster import FakeCluster
from tests.support.kubeseed import RUNNER_TOKEN, identify_and_opt_in, runner_policy
from tests.support.leftovers import module_cluster
from tests.support.inner import PYTEST

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- the decisions
def decide_all(policy: Policy, values: list[tuple[float, float]], current: int = 1) -> list[int]:
    a, out = Autoscaler(policy.validate()), []
    for t, v in values:
        current = a.decide(t, v, current).desired
        out.append(current)
    return out


def test_desired_is_ceil_of_metric_over_target_within_bounds():
    p = Policy(target=4, min_replicas=1, max_replicas=5)
    assert [p.recommend(v) for v in (0, 0.5, 4, 4.1, 8, 13, 100)] == [1, 1, 1, 2, 2, 4, 5]
    assert Policy(target=4, min_replicas=1, max_replicas=5, floor=3).recommend(0) == 3, "a pre-heat is a floor"


def test_scale_up_at_once_and_down_only_after_the_cooldown():
    p = Policy(target=2, min_replicas=1, max_replicas=4, cooldown_s=5)
    got = decide_all(p, [(0, 0), (1, 7), (2, 9), (3, 3), (4, 1), (5, 0), (8, 0), (10, 0)])
    assert got == [1, 4, 4, 4, 4, 4, 2, 1]


def test_the_up_window_damps_a_one_poll_spike():
    p = Policy(target=2, min_replicas=1, max_replicas=4, up_window_s=2, cooldown_s=0)
    assert decide_all(p, [(0, 0), (1, 8), (2, 0), (3, 8), (4, 8), (5, 8)]) == [1, 1, 1, 1, 1, 4]


@pytest.mark.parametrize("policy, words", [
    (Policy(target=0), "target must be above 0"),
    (Policy(target=2, min_replicas=3, max_replicas=2), "min 3 is above max 2"),
    (Policy(target=2, min_replicas=0), "min must be at least 1"),
    (Policy(target=2, polling_s=0), "polling_s must be above 0"),
])
def test_bad_policies_are_one_line(policy, words):
    with pytest.raises(UsageError, match=words) as err:
        policy.validate()
    assert "\n" not in str(err.value)


def test_the_metric_is_summed_over_replicas_and_missing_is_none():
    a = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 3.0\n"
    b = "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"m\"} 4.0\n"
    assert metric_sum([a, b], "vllm:num_requests_waiting") == 7.0
    assert metric_sum([a, "garbage {"], "vllm:num_requests_waiting") == 3.0
    assert metric_sum(["# nothing here\n"], "vllm:num_requests_waiting") is None


# ----------------------------------------------------------------------------- a real cluster
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    yield from module_cluster(tmp_path_factory, "autoscale", ClusterSpec(replicas=1, provisioning_delay_s=0.2))


@pytest.mark.cluster
def test_a_surge_adds_replicas_and_the_cooldown_removes_them(cluster):
    set_desired(cluster.state_dir, autoscale_target=4, autoscale_min=1, autoscale_max=3, autoscale_cooldown_s=3,
                autoscale_polling_s=0.5)
    try:
        wait_for(lambda: cluster.autoscaling().get("enabled"), 10, "the autoscaler on")
        assert len(cluster.replicas()) == 1
        started = time.monotonic()
        result = burst(cluster.lb_url, seconds=6, concurrency=64)
        assert result.ok > 0
        auto = cluster.autoscaling()
        (decision, *_) = auto["decisions"]
        assert decision["from"] == 1 and decision["to"] > 1 and decision["value"] > 4, auto
        assert len({r for r in result.replicas}) > 1, "the new replicas took traffic during the surge"
        peak = len(cluster.replicas())
        assert peak > 1
        # the load is gone; the replicas stay for the cooldown, then leave
        time.sleep(1.0)
        assert len(cluster.replicas()) == peak, "not before the cooldown"
        wait_for(lambda: len(cluster.replicas()) == 1, 20, "the cooldown scaling back to 1")
        assert cluster.autoscaling()["decisions"][-1]["to"] == 1
        assert time.monotonic() - started < 40
    finally:
        set_desired(cluster.state_dir, autoscale_target=None, autoscale_min=None, autoscale_max=None,
                    autoscale_cooldown_s=None, autoscale_polling_s=None)
        cluster.wait_steady(60)


@pytest.mark.cluster
def test_a_preheat_adds_capacity_before_any_load(cluster):
    cluster.wait_steady(60)
    assert len(cluster.replicas()) == 1
    set_desired(cluster.state_dir, preheat=3)
    try:
        wait_for(lambda: sum(r.phase == "ready" for r in cluster.replicas()) == 3, 30, "3 replicas pre-heated")
        cluster.wait_steady(30)
    finally:
        set_desired(cluster.state_dir, preheat=None)
    wait_for(lambda: len(cluster.replicas()) == 1, 30, "back to 1 once the pre-heat is cleared")


OFF = """
from inferchaos.faults.specs.autoscaled_surge import autoscaled_surge

def test_autoscaling_off(run_experiment, target):
    result = run_experiment(autoscaled_surge.on(target, factor=4.0, target_waiting=8.0, min_replicas=1,
                                                max_replicas=2, autoscaler=False))
    assert result.verdict == "pass", result.failure_message()
"""


@pytest.mark.cluster
def test_with_the_autoscaler_off_scale_out_s_fails_by_name(cluster, tmp_path):
    cluster.wait_steady(60)
    (tmp_path / "test_off.py").write_text(OFF)
    argv = [*PYTEST, str(tmp_path / "test_off.py"), "--state-dir", str(cluster.state_dir), "--ledger",
            str(tmp_path / "ledger.jsonl"), "--chaos-report", str(tmp_path / "report"),
            "--slo-set", "baseline_s=1", "--slo-set", "hold_s=4", "--slo-set", "recovery_window_s=3"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "BREACHED scale_out_s <= 8 s: not measured: autoscaling is off on this target" in out
    (e,) = json.loads((tmp_path / "report" / "summary.json").read_text())["experiments"]
    assert e["autoscaling"]["enabled"] is False
    cluster.wait_steady(60)
    assert len(cluster.replicas()) == 1, "the fault's settings were written back"


# ----------------------------------------------------------------------------- Kubernetes
def test_the_kubernetes_view_reads_the_hpa_and_the_scaled_object(tmp_path):
    with FakeKube(**runner_policy("ml")) as fake, FakeCluster(fake, namespace="ml") as fc:
        uid = identify_and_opt_in(fake, "ml")
        fake.add("autoscaling", "v2", "horizontalpodautoscalers", {
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "keda-hpa-ref", "namespace": "ml"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ref"},
                     "minReplicas": 1, "maxReplicas": 6},
            "status": {"desiredReplicas": 5, "currentReplicas": 3}}, "ml")
        fake.add("keda.sh", "v1alpha1", "scaledobjects", {
            "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "ref", "namespace": "ml"},
            "spec": {"scaleTargetRef": {"name": "ref"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Active", "status": "True"}]}},
            "ml")
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{fake.url}"}}}}]
users: [{{name: u, user: {{token: {RUNNER_TOKEN}}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: u}}}}]
current-context: fake
""")
        settings = KubeSettings("ml", fc.selector, "http://127.0.0.1:1", kubeconfig=str(kubeconfig),
                                allow_clusters=(uid,), allow_namespaces=("ml",))
        with KubeTarget(settings) as target:
            target.wait_steady(10)
            view = target.autoscaling()
        assert view["enabled"] and view["hpa"] == "keda-hpa-ref" and view["workload"] == "ref"
        assert (view["desired"], view["current"], view["min"], view["max"], view["ready"]) == (5, 3, 1, 6, 3)
        assert view["scaled_object"] == {"name": "ref", "ready": "True", "active": "True"}
        assert {r.method for r in fake.requests()} == {"GET"}, "the probe only reads"
        assert [a for a in fake.authorizations if not a.allowed] == [], "deploy/'s Role grants what it reads"
        assert ("keda.sh", "scaledobjects", "list") in {(a.group, a.resource, a.verb) for a in fake.authorizations}
