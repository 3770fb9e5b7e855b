"""The Kubernetes executors: importing this package registers them (it needs the
`kubernetes` extra, so it is imported only when a fault is built for a Kubernetes target)."""

from inferchaos.faults.kubernetes import gpu, network, pods, spot  # noqa: F401
