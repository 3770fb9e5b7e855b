"""The third-party tier: servers nobody here wrote (vLLM's CPU build, MLServer), installed by
tests/servers/install.sh; skipped where they are not installed."""
