"""The cluster tier: real processes (the local cluster, HAProxy, locust, the reference
server, pytest runs of the experiments, the wheel in a fresh venv)."""
