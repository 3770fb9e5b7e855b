"""The Kubernetes tier: the real kubernetes client (and kubectl where there is one) against the
fake API server in tests/fakekube, whose pods are real processes."""
