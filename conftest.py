"""pytest wiring only: the inferchaos plugin holds the options, fixtures and markers."""

pytest_plugins = ["inferchaos.plugin"]
