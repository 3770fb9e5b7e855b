"""Executors that act on the endpoint alone (a surge of load), so they run on every target."""

from inferchaos.faults.endpoint import traffic_surge  # noqa: F401
