"""Print what `inferchaos up` needs to run a third-party server as every replica.

Why: the command strings hold absolute venv and model paths; generating them saves
copying them by hand:

    python -m tests.servers vllm            # prepares the model, prints --replica-cmd / --ready-path
    inferchaos up --replica-cmd "$(python -m tests.servers vllm --cmd)" --ready-path /health
"""

from __future__ import annotations

import argparse
import sys

from tests.servers import SERVERS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.servers", description=__doc__.splitlines()[0])
    ap.add_argument("server", choices=sorted(SERVERS))
    ap.add_argument("--cmd", action="store_true", help="print only the replica command")
    args = ap.parse_args(argv)
    server = SERVERS[args.server]
    reason = server.available()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    server.prepare()
    if args.cmd:
        print(server.replica_cmd())
    else:
        print(f"--replica-cmd {server.replica_cmd()!r} --ready-path {server.ready_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
