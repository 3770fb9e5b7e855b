"""`inferchaos autoscale` and `inferchaos preheat`: the local cluster's autoscaler by hand.

Runtime settings (desired.json), like a `kubectl patch` of a ScaledObject: they last until
changed (`autoscale --off`, `preheat 0`), and they are not faults, so they are not journalled.
"""

from __future__ import annotations

import argparse

from inferchaos.ground.errors import UsageError
from inferchaos.targets.local.autoscaler import DEFAULT_METRIC, Policy

AUTOSCALE = ("Put the running local cluster on queue-length autoscaling with KEDA's semantics: "
             "desired replicas = ceil(summed METRIC over the replicas / TARGET) within [MIN, MAX], polled every "
             "POLL seconds; a scale-up takes the lowest recommendation of the last UP-WINDOW seconds, a "
             "scale-down the highest of the last COOLDOWN seconds. Ready warm-pool replicas go behind the "
             "LB first. --off turns it off (the cluster goes back to its replicas setting).")
AUTOSCALE_EXAMPLES = ("  inferchaos autoscale --target 8 --min 1 --max 4 --state-dir /tmp/ic\n"
                      "  inferchaos autoscale --off --state-dir /tmp/ic")
PREHEAT = ("Warm capacity ahead of a known spike: keep at least N replicas serving (with or without "
           "the autoscaler) until `preheat 0`.")
PREHEAT_EXAMPLES = "  inferchaos preheat 4 --state-dir /tmp/ic      # before the 9 am launch\n  " \
                   "inferchaos preheat 0 --state-dir /tmp/ic"
KEYS = ("autoscale_target", "autoscale_min", "autoscale_max", "autoscale_metric", "autoscale_polling_s",
        "autoscale_up_window_s", "autoscale_cooldown_s")


def add_autoscale(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", type=float, help="the metric's value per replica to aim at, e.g. 8 waiting requests")
    p.add_argument("--min", type=int, default=1, help="fewest replicas (default 1)")
    p.add_argument("--max", type=int, default=4, help="most replicas (default 4)")
    p.add_argument("--metric", default=DEFAULT_METRIC, help="summed over the replicas (default %(default)s)")
    p.add_argument("--poll", type=float, default=1.0, metavar="S", help="polling interval (default 1 s)")
    p.add_argument("--up-window", type=float, default=0.0, metavar="S", help="scale-up stabilisation (default 0)")
    p.add_argument("--cooldown", type=float, default=15.0, metavar="S", help="scale-down stabilisation (default 15)")
    p.add_argument("--off", action="store_true", help="turn autoscaling off")


def add_preheat(p: argparse.ArgumentParser) -> None:
    p.add_argument("replicas", type=int, metavar="N", help="replicas to keep serving (0: clear the pre-heat)")


def autoscale(args: argparse.Namespace, cluster: object) -> int:
    from inferchaos.targets.local.control import set_desired

    if args.off:
        set_desired(cluster.state_dir, **{k: None for k in KEYS})  # type: ignore[attr-defined]
        print(f"inferchaos: autoscaling off on the cluster in {cluster.state_dir}")  # type: ignore[attr-defined]
        return 0
    if args.target is None:
        raise UsageError("autoscale needs --target (the metric per replica), or --off")
    policy = Policy(args.target, args.min, args.max, args.metric, args.poll, args.up_window, args.cooldown).validate()
    set_desired(cluster.state_dir, autoscale_target=policy.target, autoscale_min=policy.min_replicas,  # type: ignore[attr-defined]
                autoscale_max=policy.max_replicas, autoscale_metric=policy.metric, autoscale_polling_s=policy.polling_s,
                autoscale_up_window_s=policy.up_window_s, autoscale_cooldown_s=policy.cooldown_s)
    print(f"inferchaos: autoscaling {policy.metric}: {policy.target:g} per replica, {policy.min_replicas}.."
          f"{policy.max_replicas} replicas, cooldown {policy.cooldown_s:g}s; `inferchaos status` shows its decisions")
    return 0


def preheat(args: argparse.Namespace, cluster: object) -> int:
    from inferchaos.targets.local.control import set_desired

    if args.replicas < 0:
        raise UsageError(f"preheat must be 0 or more replicas, got {args.replicas}")
    slots = cluster.spec.slots  # type: ignore[attr-defined]
    if args.replicas > slots:
        raise UsageError(f"preheat {args.replicas} is above the cluster's {slots} LB slots")
    set_desired(cluster.state_dir, preheat=args.replicas or None)  # type: ignore[attr-defined]
    print(f"inferchaos: pre-heat {'cleared' if not args.replicas else f'to {args.replicas} replicas'} on the "
          f"cluster in {cluster.state_dir}")  # type: ignore[attr-defined]
    return 0
