"""A stateful fake Kubernetes API server for driving the real `kubernetes` client over HTTP.

Fixtures (import them into a test module: `from tests.fakekube import fakekube, kube_client`):
- `fakekube`: a running `FakeKube` (url, store, set_eviction, fail_next, expire_watches, end_watches,
  bookmark_every_s, requests,
  finalize_pod, authorizations)
- `kube_client`: a `kubernetes.client.ApiClient` pointed at it

For RBAC: `FakeKube(policy=Policy.from_manifests([...]), tokens={"t": service_account("inferchaos", "runner")})`.
"""

from __future__ import annotations

from typing import Iterator

import kubernetes.client
import pytest

from tests.fakekube.apiserver import EvictionAnswer, FakeKube, Request
from tests.fakekube.rbac import Attributes, Authorization, Policy, request_attributes, service_account
from tests.fakekube.shapes import status_body
from tests.fakekube.store import Deletion, Resource, Store, pod_grace_period

__all__ = ["Attributes", "Authorization", "Deletion", "EvictionAnswer", "FakeKube", "Policy", "Request", "Resource",
           "Store", "fakekube", "kube_client", "pod_grace_period", "request_attributes", "service_account",
           "status_body"]


@pytest.fixture
def fakekube() -> Iterator[FakeKube]:
    with FakeKube() as server:
        yield server


@pytest.fixture
def kube_client(fakekube: FakeKube) -> Iterator[kubernetes.client.ApiClient]:
    client = fakekube.api_client()
    try:
        yield client
    finally:
        client.close()
