"""A stateful fake Kubernetes API server for driving the real `kubernetes` client over HTTP.

Fixtures (import them into a test module: `from tests.fakekube import fakekube, kube_client`):
- `fakekube`: a running `FakeKube` (url, store, set_eviction, fail_next, expire_watches, requests)
- `kube_client`: a `kubernetes.client.ApiClient` pointed at it
"""

from __future__ import annotations

from typing import Iterator

import kubernetes.client
import pytest

from tests.fakekube.apiserver import EvictionAnswer, FakeKube, Request
from tests.fakekube.shapes import status_body
from tests.fakekube.store import Resource, Store

__all__ = ["EvictionAnswer", "FakeKube", "Request", "Resource", "Store", "fakekube", "kube_client", "status_body"]


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
