"""The `inferchaos` command line: the local cluster, faults by hand, live numbers, reports.

One module per verb group (cluster, faults, recover, live, load, reports), each adding its verbs
to the parser and naming what runs them; `inputs` holds what they share.

Exit codes: 0 success; 1 the target or a fault failed, or nothing is running where a
cluster was expected (`status`); 2 bad input (options, parameters, files, a cluster that
is not there to inject into), with one line on stderr and nothing started or injected.
"""

from __future__ import annotations

import argparse
import sys

from inferchaos.cli import cluster, faults, live, load, recover, reports
from inferchaos.cli.inputs import EXIT_CODES, Parser, one_line
from inferchaos.ground.errors import InferchaosError, UsageError

GROUPS = (cluster, faults, live, load, recover, reports)
EPILOG = f"""\
examples:
  inferchaos up --detach --state-dir /tmp/ic     # 3 replicas behind HAProxy, in the background
  inferchaos status --state-dir /tmp/ic          # replicas, readiness, LB server states
  inferchaos faults                              # the catalogue: ids, parameters, blast radius
  inferchaos plan replica_hang --state-dir /tmp/ic            # what it would do; changes nothing
  inferchaos inject replica_hang --state-dir /tmp/ic          # apply it and leave it applied
  inferchaos watch --state-dir /tmp/ic                        # live req/s, 5xx/s, p99, LB, faults
  inferchaos revert --all                        # undo what inject applied
  inferchaos recover                             # undo what a killed runner left applied
  inferchaos down --state-dir /tmp/ic            # stop everything it started
  inferchaos report reports/out                  # summary.html, and the Allure site when Node.js is there
  inferchaos report --compare last/ tonight/     # what changed night to night; exit 1 on a regression
  inferchaos inventory --state-dir /tmp/ic       # models, replicas, GPUs, owners; flags shadow AI

{EXIT_CODES}
"""



def build_parser() -> Parser:
    parser = Parser(prog="inferchaos", description="Chaos engineering for ML inference clusters.",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)
    for group in GROUPS:
        group.add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    verbs = {verb: run for group in GROUPS for verb, run in group.VERBS.items()}
    try:
        return verbs[args.verb](args)
    except UsageError as exc:
        print(f"inferchaos: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except InferchaosError as exc:
        print(f"inferchaos: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
