"""pytest wiring only. The inferchaos plugin (options, fixtures, markers) loads by its
`pytest11` entry point wherever inferchaos is installed (`make setup` installs this checkout
editable, and the load, the local cluster and the CLI need it installed: their processes
import `inferchaos`); this names the plugin only for a checkout that was never installed."""

from importlib import metadata

if not any(ep.name == "inferchaos" for ep in metadata.entry_points(group="pytest11")):
    pytest_plugins = ["inferchaos.plugin"]
