"""What the cluster's processes inherit: never the operator's credentials.

HAProxy, Prometheus, the stores and the proxy get an explicit environment (how to run,
nothing else); a replica command gets the runner's minus credentials (a model server reads
its own settings from the environment, and a model hub token it fetches weights with).
Read back from /proc/<pid>/environ of the running processes, not from the code.
"""

from __future__ import annotations

import os

import pytest

from inferchaos.targets.local import ClusterSpec, LocalCluster
from inferchaos.targets.local.processes import MARK_ENV, group_members

pytestmark = pytest.mark.cluster

SECRETS = {"KUBECONFIG": "/home/op/.kube/config", "INFERCHAOS_GRAFANA_TOKEN": "glsa_secret",
           "AWS_SECRET_ACCESS_KEY": "aws-secret", "INFER_API_TOKEN": "bearer-secret"}
KEPT = {"HF_TOKEN": "hf_model_hub", "OMP_NUM_THREADS": "1"}


def environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        return dict(kv.split("=", 1) for kv in f.read().decode(errors="replace").split("\0") if "=" in kv)


def test_no_process_of_the_cluster_holds_the_operators_credentials(tmp_path, monkeypatch):
    for k, v in {**SECRETS, **KEPT}.items():
        monkeypatch.setenv(k, v)
    with LocalCluster(ClusterSpec(replicas=1), tmp_path / "ic") as cluster:
        state = cluster.state
        services = {s.name: s for s in state.services}
        assert "haproxy" in services and state.replicas
        everyone = [(f"service {s.name}", p) for s in state.services for p in group_members(s.pgid)]
        everyone += [(f"replica {r.name}", p) for r in state.replicas for p in group_members(r.pgid)]
        everyone += [("supervisor", state.supervisor_pid)]
        for who, pid in everyone:
            env = environ(pid)
            leaked = sorted(set(SECRETS) & set(env))
            assert not leaked, f"{who} (pid {pid}) holds {leaked}"
            assert env.get(MARK_ENV) == state.mark, f"{who} does not carry the cluster's mark"
        for r in state.replicas:  # a replica keeps what a model server reads
            env = environ(r.pid)
            assert {k: env.get(k) for k in KEPT} == KEPT
        haproxy = environ(services["haproxy"].pid)
        assert "HF_TOKEN" not in haproxy and "OMP_NUM_THREADS" not in haproxy, "a service gets only how to run"
    assert os.environ["KUBECONFIG"] == SECRETS["KUBECONFIG"], "the runner's own environment is untouched"
