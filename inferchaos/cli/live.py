"""`watch`, `autoscale`, `preheat`: the running local cluster, live."""

from __future__ import annotations

import argparse
import sys

from inferchaos.cli.inputs import add_verb, ledger_arg, ledger_file, positive_seconds, running_cluster, state_dir_arg


def add(sub: argparse._SubParsersAction) -> None:
    """watch, autoscale, preheat."""
    watch = add_verb(sub, "watch", "live numbers of the running local cluster",
                    "Refresh requests/s and 5xx/s (HAProxy's counters), p99 (the replicas' "
                    "vllm:e2e_request_latency_seconds buckets), replicas ready, each HAProxy server's state and the "
                    "faults still applied (the ledger) every --interval seconds: in place on a terminal, one line "
                    "per refresh otherwise. Ctrl-C stops it.",
                    "  inferchaos watch --state-dir /tmp/ic\n  inferchaos watch --interval 5 | tee gameday.log\n"
                    "  inferchaos watch --once    # one reading over one interval")
    state_dir_arg(watch)
    ledger_arg(watch)
    watch.add_argument("--interval", type=positive_seconds, default=1.0, metavar="S",
                       help="seconds between refreshes (default: %(default)g)")
    watch.add_argument("--once", action="store_true", help="print one reading and exit")
    watch.add_argument("--target", choices=("local", "kubernetes"), default="local",
                       help="local: the cluster in --state-dir; kubernetes: the pods, their EndpointSlices and every "
                            "run's faults in the namespace (default: %(default)s)")
    from inferchaos import kube_options

    kube_options.add_options(watch.add_argument_group("--target kubernetes"))

    from inferchaos import scaling_verbs as scaling

    for verb, text, description, examples, add in (
            ("autoscale", "queue-length autoscaling for the local cluster", scaling.AUTOSCALE,
             scaling.AUTOSCALE_EXAMPLES, scaling.add_autoscale),
            ("preheat", "keep N replicas serving ahead of a known spike", scaling.PREHEAT, scaling.PREHEAT_EXAMPLES,
             scaling.add_preheat)):
        p = add_verb(sub, verb, text, description, examples)
        add(p)
        state_dir_arg(p)



def cmd_watch(args: argparse.Namespace) -> int:
    from inferchaos.ground.errors import TargetError
    from inferchaos.watch import watch

    ledger = ledger_file(args.ledger)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    if args.target == "kubernetes":
        from inferchaos.cli.faults import kube_settings
        from inferchaos.targets.kubernetes import KubeTarget
        from inferchaos import watch_kube

        with KubeTarget(kube_settings(args)) as target:
            try:
                return watch_kube.watch(target, ledger, args.interval, args.once, sys.stdout.isatty(), write)
            except KeyboardInterrupt:
                return 0
    cluster = running_cluster(args.state_dir)
    try:
        return watch(cluster, ledger, args.interval, args.once, sys.stdout.isatty(), write)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        raise TargetError(f"lost the cluster in {args.state_dir}: {exc}") from None


def cmd_scaling(args: argparse.Namespace) -> int:
    from inferchaos import scaling_verbs

    return getattr(scaling_verbs, args.verb)(args, running_cluster(args.state_dir))



VERBS = {"watch": cmd_watch, "autoscale": cmd_scaling, "preheat": cmd_scaling}
