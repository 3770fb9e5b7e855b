"""Which Service a URL's host names, by the cluster DNS forms Kubernetes documents
(kubernetes.io/docs/concepts/services-networking/dns-pod-service: `<service>` within the
namespace, `<service>.<namespace>`, `<service>.<namespace>.svc.<cluster-domain>`)."""

from __future__ import annotations

import pytest

from inferchaos.ground.errors import UsageError
from inferchaos.targets.kubernetes.service import named_by_dns


@pytest.mark.parametrize("host, name", [
    ("vllm", "vllm"),
    ("vllm.ml", "vllm"),
    ("vllm.ml.svc", "vllm"),
    ("vllm.ml.svc.cluster.local", "vllm"),
    ("VLLM.ml.svc.corp.internal.", "vllm"),
    # not a Service's DNS name: resolved by address, or named with --service
    ("10.96.0.12", None),
    ("fd00::a", None),
    ("localhost", None),
    ("vllm.example.com", None),
])
def test_a_host_names_a_service_of_the_namespace_or_none(host, name):
    assert named_by_dns(host, "ml") == name


@pytest.mark.parametrize("host", ["vllm.other.svc", "vllm.other.svc.cluster.local"])
def test_a_service_of_another_namespace_is_refused(host):
    with pytest.raises(UsageError, match="namespace other, not of ml"):
        named_by_dns(host, "ml")
