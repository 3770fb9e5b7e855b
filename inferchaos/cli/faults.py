"""`faults`, `plan`, `inject`, `revert`: a fault by hand, for a game day."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from inferchaos.cli.inputs import add_verb, ledger_arg, ledger_file, running_cluster, state_dir_arg
from inferchaos.cli.recover import undo
from inferchaos.errors import UsageError

if TYPE_CHECKING:
    from inferchaos.faults.base import Fault
    from inferchaos.faults.ledger import Ledger
    from inferchaos.targets.local.cluster import LocalCluster


def add(sub: argparse._SubParsersAction) -> None:
    """faults, plan, inject, revert."""
    faults = add_verb(sub, "faults", "list the fault catalogue",
                     "Every fault id with what it simulates, its blast radius, its runbook and its parameters "
                     "(KEY=DEFAULT and meaning), as `plan` and `inject` take them.",
                     "  inferchaos faults\n  inferchaos faults spot_reclamation")
    faults.add_argument("fault", nargs="?", metavar="FAULT", help="show only this fault")

    for verb, text, description, example in (
            ("plan", "say what a fault would do, change nothing",
             "Print what FAULT would do to which objects of the running local cluster (replicas by name "
             "and pid, routes, processes), within its blast radius. Nothing is changed or journalled.",
             "  inferchaos plan replica_crash replicas=50% --state-dir /tmp/ic\n"
             "  inferchaos plan dependency_latency dependency=model_store latency_ms=200\n"
             "  inferchaos plan spot_reclamation notice_s=30 --target kubernetes --kube-context staging \\\n"
             "      --allow-cluster 6f1c0b2e-... --namespace ml --allow-namespace ml --selector app=vllm"),
            ("inject", "apply one fault and leave it applied",
             "Apply FAULT to the running local cluster (started with `inferchaos up --detach`), journal it in "
             "the ledger first, print its ledger id and how to revert it, and exit with the fault still "
             "applied — a game day's way of working. Refused while the ledger shows another change not "
             "reverted. `inferchaos revert` (or `recover`) undoes it.",
             "  inferchaos inject spot_reclamation notice_s=5 provisioning_delay_s=30 --state-dir /tmp/ic\n"
             "  inferchaos inject gpu_oom leave=256MiB ramp_s=10\n"
             "  inferchaos inject pipeline_lag mode=both read_latency_ms=2000")):
        p = add_verb(sub, verb, text, description, example)
        p.add_argument("fault", metavar="FAULT", help="a fault id (`inferchaos faults` lists them)")
        p.add_argument("params", nargs="*", metavar="KEY=VALUE", help="the fault's parameters")
        state_dir_arg(p)
        ledger_arg(p)
        if verb == "plan":
            from inferchaos import kube_options

            p.add_argument("--target", choices=("local", "kubernetes"), default="local",
                           help="where it would land (kubernetes: the options below; it only reads)")
            kube_options.add_options(p.add_argument_group("--target kubernetes"))

    rev = add_verb(sub, "revert", "undo a fault that inject left applied",
                  "Undo one open ledger entry (by id, or a unique prefix of it), or every open fault with --all, "
                  "with the same undo executors `inferchaos recover` uses. Entries whose runner is still alive "
                  "(an experiment in progress) are left to it unless --force. Clusters are `down`'s business.",
                  "  inferchaos revert 3f2a9c1b0d2e\n  inferchaos revert --all --ledger /tmp/ic-ledger.jsonl")
    rev.add_argument("id", nargs="?", metavar="ID", help="the ledger id `inject` printed")
    rev.add_argument("--all", action="store_true", help="every fault still applied")
    rev.add_argument("--force", action="store_true", help="also entries whose runner is still alive")
    ledger_arg(rev)



def cmd_faults(args: argparse.Namespace) -> int:
    from inferchaos.faults.catalogue import CATALOGUE, lookup

    specs = [lookup(args.fault)] if args.fault else list(CATALOGUE.values())
    for n, spec in enumerate(specs):
        if n:
            print()
        print(f"{spec.id}: {spec.summary}")
        print(f"  blast radius: {spec.blast_radius}")
        print(f"  runbook:      {spec.runbook}")
        if spec.standalone_refusal:
            print(f"  by hand:      no — {spec.standalone_refusal}")
        defaults = spec.defaults()
        print("  parameters (KEY=DEFAULT):" if spec.params else "  parameters: none")
        for p in spec.params:
            default = defaults[p.name]
            shown = "none" if default is None else (str(default).lower() if isinstance(default, bool) else default)
            print(f"    {p.name + '=' + str(shown):<28}{p.meaning} [{p.accepts()}]")
    return 0


def _fault(args: argparse.Namespace, for_inject: bool) -> tuple[Fault, Ledger, LocalCluster]:
    """Parse and check everything, in the order that touches least: fault id, parameters,
    ledger, cluster, the fault's own checks and its blast radius. Nothing is changed."""
    from inferchaos.faults.catalogue import lookup

    spec = lookup(args.fault)
    if for_inject and spec.standalone_refusal:
        raise UsageError(spec.standalone_refusal)
    params = spec.parse(args.params)
    ledger = ledger_file(args.ledger, write=for_inject)
    cluster = running_cluster(args.state_dir)
    return spec.build(cluster, ledger, params), ledger, cluster


def _plan(fault: Fault) -> list[str]:
    try:
        return fault.plan()
    except UsageError as exc:
        raise UsageError(str(exc) if str(exc).startswith(fault.name) else f"{fault.name}: {exc}") from None


def cmd_plan(args: argparse.Namespace) -> int:
    from inferchaos.faults.catalogue import lookup

    if args.target == "kubernetes":
        return _plan_kubernetes(args)
    fault, _, cluster = _fault(args, for_inject=False)
    lines = _plan(fault)
    spec = lookup(args.fault)
    print(f"plan: {spec.id} on the cluster in {cluster.state_dir} (nothing is changed)")
    for line in lines or ["(nothing to act on right now)"]:
        print(f"  {line}")
    print(f"blast radius: {spec.blast_radius}")
    if spec.standalone_refusal:
        print(f"by hand: {spec.standalone_refusal}")
    else:
        params = " ".join(args.params)
        print(f"apply it with: inferchaos inject {spec.id}{' ' + params if params else ''} --state-dir {args.state_dir}")
    return 0


def _plan_kubernetes(args: argparse.Namespace) -> int:
    """The same plan against a namespace: connects, reads the pods, changes nothing."""
    from inferchaos.faults.catalogue import lookup
    from inferchaos import kube_options
    from inferchaos.targets.kubernetes import KubeTarget

    spec = lookup(args.fault)
    params = spec.parse(args.params)
    def get(name: str) -> object:
        value = getattr(args, name.lstrip("-").replace("-", "_"))
        if name == "--endpoint" and not value:
            return "http://endpoint-not-needed-for-a-plan"  # a plan sends no load
        return value

    settings = kube_options.settings(get)
    with KubeTarget(settings) as target:
        fault = spec.build(target, ledger_file(args.ledger), params)
        lines = _plan(fault)
        print(f"plan: {spec.id} in {target.describe()} (nothing is changed)")
    for line in lines or ["(nothing to act on right now)"]:
        print(f"  {line}")
    print(f"blast radius: {spec.blast_radius}")
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    fault, ledger, cluster = _fault(args, for_inject=True)
    still = [e for e in ledger.open_entries() if e.fault != "cluster"]
    if still:
        names = ", ".join(f"{e.fault} ({e.id})" for e in still)
        raise UsageError(f"the ledger {ledger.path} shows changes not reverted: {names}; revert them first "
                         f"with `inferchaos revert --all --ledger {ledger.path}`")
    lines = _plan(fault)  # the blast radius is checked here, before anything is journalled
    try:
        fault.prepare()
        fault.inject()
        _settle(fault)
    except BaseException:
        fault.revert()  # whatever got applied is undone before the error is told
        raise
    entry = fault._entry
    assert entry is not None
    print(f"inferchaos: injected {fault.name} on the cluster in {cluster.state_dir}: ledger id {entry.id}")
    for line in lines:
        print(f"  {line}")
    print(f"it stays applied. Revert it with:\n  inferchaos revert {entry.id} --ledger {args.ledger}\n"
          f"(or everything: inferchaos revert --all --ledger {args.ledger})")
    return 0


def _settle(fault: Fault) -> None:
    """A fault's own threads end with this process: finish the work they still hold
    (a reclamation's kill at the notice deadline), then stop them."""
    from inferchaos.faults.local import LocalFault
    from inferchaos.faults.spot_reclamation import SpotReclamation
    from inferchaos.targets.local.cluster import wait_for
    from inferchaos.targets.local.processes import group_alive

    if isinstance(fault, SpotReclamation):
        wait_for(lambda: not any(group_alive(v.pgid) for v in fault.victims), fault.notice_s + 15,
                 "the reclaimed replicas gone at the notice deadline")
    if isinstance(fault, LocalFault):
        fault.stop_watching()


def cmd_revert(args: argparse.Namespace) -> int:
    if args.id and args.all:
        raise UsageError("give a ledger ID or --all, not both")
    if not args.id and not args.all:
        raise UsageError("revert needs a ledger ID (inject printed it; `inferchaos watch` shows it) or --all")
    ledger = ledger_file(args.ledger, write=True)
    applied = [e for e in ledger.open_entries() if e.fault != "cluster"]
    if args.all:
        chosen = applied
        if not chosen:
            print(f"inferchaos: nothing to revert: no fault in {args.ledger} is still applied")
            return 0
    else:
        chosen = [e for e in applied if e.id.startswith(args.id)]
        if len(chosen) > 1:
            raise UsageError(f"ledger id {args.id!r} is ambiguous: {', '.join(e.id for e in chosen)}")
        if not chosen:
            if any(e.id.startswith(args.id) for e in ledger.entries()):
                print(f"inferchaos: {args.id} is already reverted")
                return 0
            listed = ", ".join(f"{e.fault} {e.id}" for e in applied) or "none"
            raise UsageError(f"no ledger entry {args.id!r} in {args.ledger} (still applied: {listed})")
    failed, skipped = undo(ledger, chosen, args.force)
    return 1 if failed or skipped else 0



VERBS = {"faults": cmd_faults, "plan": cmd_plan, "inject": cmd_inject, "revert": cmd_revert}
