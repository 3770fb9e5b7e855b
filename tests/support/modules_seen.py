"""A pytest plugin (`-p tests.support.modules_seen`) that records every import of a layer by its
top-level name (`load`, `probes`, `faults`, `targets`, `reports`) in the process it runs in,
attempts included, and writes them to $INFERCHAOS_MODULES_SEEN when pytest ends.

The checkout holds those folders at its top and a test run has the checkout on sys.path, so
`import load` would succeed and give a second copy of every module in it; only the record of
a whole run can say that nothing did."""

from __future__ import annotations

import json
import os
import sys
from importlib.abc import MetaPathFinder

LAYERS = ("load", "probes", "faults", "targets", "reports")


class Recorder(MetaPathFinder):
    """First on sys.meta_path: notes the name, then lets the real finders answer."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def find_spec(self, fullname, path=None, target=None):  # noqa: ANN001 - the finder protocol
        if fullname.split(".")[0] in LAYERS:
            self.seen.add(fullname)
        return None

    def report(self) -> list[str]:
        loaded = {m for m in sys.modules if m.split(".")[0] in LAYERS}
        return sorted(self.seen | loaded)


RECORDER = Recorder()
sys.meta_path.insert(0, RECORDER)


def pytest_unconfigure(config) -> None:  # noqa: ANN001 - pytest's hook
    out = os.environ.get("INFERCHAOS_MODULES_SEEN")
    if out:
        with open(out, "w") as fh:
            json.dump(RECORDER.report(), fh)
