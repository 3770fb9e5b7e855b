"""What every verb shares: the one-line, exit-code-2 parser, the common options, and
the checks of a state directory and a ledger before anything is touched."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from inferchaos.ground.errors import UsageError

if TYPE_CHECKING:
    from inferchaos.faults.ledger import Ledger
    from inferchaos.targets.local.cluster import LocalCluster
    from inferchaos.targets.local.state import ClusterState

DEFAULT_STATE_DIR = Path(".inferchaos/cluster")
DEFAULT_LEDGER = Path(".inferchaos/ledger.jsonl")

EXIT_CODES = "exit codes: 0 ok, 1 target/fault failure or nothing running, 2 bad input (one line, nothing changed)"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, and an option is spelt out
    (`--allow` must not silently mean one of the allow-lists)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        print(f"inferchaos: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0 seconds, got {text}")
    return value


def duration(text: str) -> float:
    """90, 90s, 5m, 1h: seconds above 0."""
    units = {"s": 1, "m": 60, "h": 3600}
    raw = text.strip().lower()
    scale = units.get(raw[-1:], None)
    try:
        value = float(raw[:-1] if scale else raw) * (scale or 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration like 90, 90s, 5m or 1h, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0 seconds, got {text!r}")
    return value


def add_verb(sub: argparse._SubParsersAction, verb: str, text: str, description: str, examples: str) -> Parser:
    return sub.add_parser(verb, help=text, description=textwrap.fill(description, 100),
                          epilog=f"examples:\n{examples}\n\n{EXIT_CODES}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def state_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                   help="the local cluster's state directory (default: %(default)s)")


def ledger_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER, help="the fault ledger (default: %(default)s)")


def printable(text: str) -> str:
    """Text from a ledger, a ConfigMap or a server, fit for a terminal: every control
    character (an escape sequence, a line break) written as its escape, not obeyed."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(text: str) -> str:
    """A message echoes what it was given; a line break in that must not break the line."""
    return "\\n".join(text.splitlines()) if len(text.splitlines()) > 1 else text.strip()


def read_state_dir(state_dir: Path) -> ClusterState | None:
    """The state file, or None when there is none; a path that cannot hold one is bad input."""
    from inferchaos.targets.local.state import check_state_dir, read_state

    if state_dir.exists() and not state_dir.is_dir():
        raise UsageError(f"--state-dir {state_dir} is not a directory")
    check_state_dir(state_dir)  # another user's (or writable by one): refused, one line, exit 2
    try:
        return read_state(state_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot read the cluster state in {state_dir}: {exc}") from None


def running_cluster(state_dir: Path) -> LocalCluster:
    """The local cluster to act on; not there, or not running, is bad input (exit 2)."""
    from inferchaos.targets.local.cluster import LocalCluster
    from inferchaos.targets.local.processes import group_alive

    state = read_state_dir(state_dir)
    if state is None:
        raise UsageError(f"no local cluster in {state_dir}: start one with "
                         f"`inferchaos up --detach --state-dir {state_dir}`")
    if state.phase != "ready" or not group_alive(state.supervisor_pgid):
        phase = state.phase if group_alive(state.supervisor_pgid) else f"{state.phase}, supervisor gone"
        raise UsageError(f"the cluster in {state_dir} is not running ({phase}): "
                         f"`inferchaos down --state-dir {state_dir}`, then `inferchaos up --detach`")
    return LocalCluster.attach(state_dir)


def ledger_file(path: Path, write: bool = False) -> Ledger:
    from inferchaos.faults.ledger import Ledger

    if path.is_dir():
        raise UsageError(f"--ledger {path} is a directory, not a ledger file")
    if path.exists() and not os.access(path, os.R_OK):
        raise UsageError(f"cannot read the ledger {path}")
    if write:
        parent = next((p for p in path.absolute().parents if p.exists()), None)
        if parent is not None and (not parent.is_dir() or not os.access(parent, os.W_OK)):
            raise UsageError(f"cannot write the ledger {path}: {parent} is not a writable directory")
        if path.exists() and not os.access(path, os.W_OK):
            raise UsageError(f"cannot write the ledger {path}")
    return Ledger(path)


def stop_signals():  # type: ignore[no-untyped-def]
    """Ctrl-C and SIGTERM set a flag the verb's loop reads, so its `finally` (stopping the
    cluster or the load) runs whole rather than from inside a handler."""
    flag = {"stop": False}

    def handler(*_: object) -> None:
        flag["stop"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return lambda: flag["stop"]
