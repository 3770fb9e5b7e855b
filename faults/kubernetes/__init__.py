"""The Kubernetes executors; the registry imports every module here, and only when a fault is
built for a Kubernetes target (they need the `kubernetes` extra)."""
