"""The `inferchaos inventory` verb: its options, their checks, and what it prints.

Reading is harmless, so the inventory reads any kube context, allowlisted or not (a
shadow-AI audit must see the namespaces nobody allowed chaos in), and says which context
it read and whether chaos may touch it. It never changes anything: GETs only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from inferchaos.ground.errors import InferchaosError, UsageError
from inferchaos.targets.inventory.workload import DEFAULT_OWNER_KEYS, Workload, shadow_line, shadow_workloads, table, to_json

DEFAULT_STATE_DIR = Path(".inferchaos/cluster")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
ALLOW_NAMESPACES_ENV = "INFERCHAOS_ALLOW_NAMESPACES"
KUBE_ONLY = ("kubeconfig", "kube_context", "allow_cluster", "namespace", "allow_namespace", "all_namespaces")

DESCRIPTION = (
    "List every inference workload of a target: model, replicas ready/desired, GPUs (the local cluster's "
    "virtual GPUs and their device memory; nvidia.com/gpu requests/limits and the nodes' GPU type on "
    "Kubernetes) and owner (labels --owner-label, default owner and team). A workload that asks for GPUs "
    "and has no owner label is flagged as shadow AI. Read-only: on Kubernetes any context is read "
    "(GETs only), and the output says which. The local cluster's labels come from <state dir>/labels.json, "
    'e.g. {"owner": "ml-platform", "team": "search"}; its virtual GPUs count as GPUs, so without an owner '
    "it is flagged too.")
EXAMPLES = (
    "  inferchaos inventory --state-dir /tmp/ic\n"
    "  inferchaos inventory --target kubernetes --kube-context staging --namespace inference\n"
    "  inferchaos inventory --target kubernetes --all-namespaces --owner-label cost-center --json\n"
    "  inferchaos inventory --target kubernetes -A --fail-on-shadow    # CI: exit 1 on shadow AI")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", choices=["local", "kubernetes"], default="local", help="default: local")
    p.add_argument("--state-dir", type=Path, metavar="DIR",
                   help=f"local: the cluster's state directory (default: {DEFAULT_STATE_DIR})")
    p.add_argument("--json", action="store_true", help="a JSON list of workloads instead of the table")
    p.add_argument("--fail-on-shadow", action="store_true", help="exit 1 when a shadow-AI workload is found")
    p.add_argument("--owner-label", action="append", default=[], metavar="KEY",
                   help="a label naming the owner (repeatable; default: owner, team)")
    k = p.add_argument_group("kubernetes")
    k.add_argument("--kubeconfig", metavar="FILE", help="default: in-cluster, else $KUBECONFIG or ~/.kube/config")
    k.add_argument("--kube-context", metavar="NAME", help="default: the kubeconfig's current one")
    k.add_argument("--allow-cluster", action="append", default=[], metavar="UID",
                   help="clusters chaos may touch, by kube-system UID: only said in the output, reading needs none")
    k.add_argument("--namespace", action="append", default=[], metavar="NS",
                   help="a namespace to read (repeatable; default: the --allow-namespace list)")
    k.add_argument("--allow-namespace", action="append", default=[], metavar="NS",
                   help="read these when no --namespace is given (or $INFERCHAOS_ALLOW_NAMESPACES)")
    k.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")


def _env_list(name: str) -> list[str]:
    return [x.strip() for x in os.environ.get(name, "").split(",") if x.strip()]


def _owner_keys(args: argparse.Namespace) -> tuple[str, ...]:
    for key in args.owner_label:
        if not LABEL_KEY.match(key):
            raise UsageError(f"--owner-label {key!r}: not a label key (like owner, team or example.com/owner)")
    return tuple(dict.fromkeys(args.owner_label)) or DEFAULT_OWNER_KEYS


def _namespaces(args: argparse.Namespace) -> list[str] | None:
    if args.all_namespaces:
        if args.namespace:
            raise UsageError("give --namespace or --all-namespaces, not both")
        return None
    chosen = list(dict.fromkeys(args.namespace or [*args.allow_namespace, *_env_list(ALLOW_NAMESPACES_ENV)]))
    if not chosen:
        raise UsageError("which namespaces? give --namespace NS (repeatable), --allow-namespace, "
                         f"${ALLOW_NAMESPACES_ENV}, or --all-namespaces")
    for ns in chosen:
        if not NAMESPACE.match(ns):
            raise UsageError(f"namespace {ns!r} is not a valid namespace name")
    return chosen


def _local(args: argparse.Namespace, keys: tuple[str, ...]) -> tuple[str, list[Workload]]:
    from inferchaos.targets.inventory.local import local_inventory
    from inferchaos.targets.local.cluster import LocalCluster
    from inferchaos.targets.local.state import read_state

    state_dir = args.state_dir or DEFAULT_STATE_DIR
    if state_dir.exists() and not state_dir.is_dir():
        raise UsageError(f"--state-dir {state_dir} is not a directory")
    try:
        state = read_state(state_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot read the cluster state in {state_dir}: {exc}") from None
    if state is None:
        raise UsageError(f"no local cluster in {state_dir}: start one with "
                         f"`inferchaos up --detach --state-dir {state_dir}`")
    return (f"inventory of the local cluster in {state_dir} (read only)",
            local_inventory(LocalCluster.attach(state_dir), keys))


def _kube(args: argparse.Namespace, keys: tuple[str, ...]) -> tuple[str, list[Workload]]:
    from inferchaos.targets.inventory.kube import kube_inventory
    from inferchaos.targets.kubernetes.connection import Connection
    from inferchaos.targets.kubernetes.identity import allowed_clusters, check_identity, read_identity

    namespaces = _namespaces(args)
    conn = Connection.resolve(args.kubeconfig, args.kube_context)
    api = conn.api_client()
    try:
        try:
            identity = read_identity(api, conn.context)
            check_identity(identity, allowed_clusters(tuple(args.allow_cluster)), conn.context)
            chaos = f"cluster {identity.uid}, on the chaos allowlist"
        except InferchaosError as exc:
            chaos = "not on the chaos allowlist" if "not on the allowlist" in str(exc) else \
                "identity unreadable, not on the chaos allowlist"
        workloads = kube_inventory(api, namespaces, conn.context, keys)
    finally:
        api.close()
    where = "all namespaces" if namespaces is None else "namespace" + ("s " if len(namespaces) > 1 else " ") + \
        ", ".join(namespaces)
    return f"inventory of context {conn.context} ({chaos}), {where} (read only: GETs)", workloads


def run(args: argparse.Namespace) -> int:
    """Print the inventory; 0, or 1 with --fail-on-shadow when shadow AI was found."""
    keys = _owner_keys(args)
    if args.target == "local":
        given = [f"--{name.replace('_', '-')}" for name in KUBE_ONLY if getattr(args, name)]
        if given:
            raise UsageError(f"{', '.join(given)}: only with --target kubernetes")
        title, workloads = _local(args, keys)
    else:
        if args.state_dir is not None:
            raise UsageError("--state-dir: only with --target local")
        title, workloads = _kube(args, keys)
    if args.json:
        print(to_json(workloads))
    else:
        print(title)
        print(table(workloads) if workloads else "no inference workload found")
        print(shadow_line(workloads))
    sys.stdout.flush()
    return 1 if args.fail_on_shadow and shadow_workloads(workloads) else 0
