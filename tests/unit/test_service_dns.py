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


def test_only_an_ip_in_a_slice_is_a_pod_address():
    from kubernetes import client

    from inferchaos.targets.kubernetes.slices import _addresses

    def slice_of(address: str, port: int = 8000) -> client.V1EndpointSlice:
        return client.V1EndpointSlice(address_type="IPv4", ports=[client.DiscoveryV1EndpointPort(name="http", port=port)],
                                      endpoints=[client.V1Endpoint(addresses=[address], target_ref=client.V1ObjectReference(
                                          kind="Pod", name="web-0"))])
    assert _addresses(slice_of("10.0.0.7")) == {"web-0": ("10.0.0.7", 8000)}
    assert _addresses(slice_of("fd00::7")) == {"web-0": ("fd00::7", 8000)}
    assert _addresses(slice_of("evil.example/../x")) == {}
    assert _addresses(slice_of("10.0.0.7", port=70000)) == {}
