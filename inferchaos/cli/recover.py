"""`recover`: undo what a runner that died left applied, and sweep what expired."""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import TYPE_CHECKING

from inferchaos.cli.inputs import add_verb, ledger_arg, ledger_file
from inferchaos.errors import UsageError

if TYPE_CHECKING:
    from inferchaos.faults.ledger import Entry, Ledger
    from inferchaos.targets.kubernetes import Connection


def add(sub: argparse._SubParsersAction) -> None:
    """recover."""
    rec = add_verb(sub, "recover", "undo every change the ledger says is still applied",
                  "Replay the undo of every ledger entry left open by a runner that died (SIGKILL, power loss) "
                  "or by `inject`: faults, load generators, local clusters it started.",
                  "  inferchaos recover\n  inferchaos recover --ledger ci/ledger.jsonl --force")
    ledger_arg(rec)
    rec.add_argument("--force", action="store_true",
                     help="also undo entries whose runner is still alive (it would revert them itself)")
    rec.add_argument("--expired", action="store_true",
                     help="first the Kubernetes namespace: the runs' ledgers kept there (changes of a runner "
                          "whose pod is gone, or past their expiry), then the marks past their expiry "
                          "(cordons, taints, scaled Deployments, NetworkChaos), whoever made them; needs "
                          "--namespace and --allow-cluster (what the nightly CronJob runs first)")
    from inferchaos import kube_options

    kube_options.add_options(rec.add_argument_group("--expired on Kubernetes"))



def undo(ledger: Ledger, entries: list[Entry], force: bool) -> tuple[int, int]:
    """Run each entry's journalled undo, newest step first; clusters last, since a fault's
    undo may need its cluster. Returns (failed, skipped)."""
    from inferchaos.faults.undo import run_all
    from inferchaos.errors import FaultError
    from inferchaos.targets.local.processes import pid_alive, start_time

    failed = skipped = 0
    for entry in sorted(entries, key=lambda e: (e.fault == "cluster", -e.wall)):
        if not force and entry.runner_pid != os.getpid() and pid_alive(entry.runner_pid) \
                and start_time(entry.runner_pid) == entry.runner_started:
            print(f"skipped {entry.fault} {entry.id}: its runner (pid {entry.runner_pid}) is still running "
                  "and will revert it; --force to undo anyway")
            skipped += 1
            continue
        try:
            run_all(entry.undo, lambda done, e=entry: print(f"{e.fault} {e.id}: {done}"))
        except FaultError as exc:
            failed += 1
            ledger.reverted(entry, ok=False, detail=str(exc))
            print(f"{entry.fault} {entry.id}: FAILED: {exc}", file=sys.stderr)
            continue
        ledger.reverted(entry, detail="recovered")
        print(f"{entry.fault} {entry.id}: reverted")
    return failed, skipped


def namespace_connection(args: argparse.Namespace, verb: str) -> tuple[Connection, str]:
    """The operator's own connection to the namespace named by the options, pinned to the
    allowed cluster identity: what a sweep or a recovery from the cluster acts through."""
    from inferchaos.targets.kubernetes import Connection
    from inferchaos.targets.kubernetes.identity import allowed_clusters, check_identity, read_identity
    from inferchaos.targets.kubernetes.settings import ALLOW_NAMESPACES_ENV, SYSTEM_NAMESPACES, _env_list

    ns = args.namespace
    if not ns:
        raise UsageError(f"{verb} needs --namespace NS (the namespace to sweep)")
    if ns in SYSTEM_NAMESPACES or ns not in (*args.allow_namespace, *_env_list(ALLOW_NAMESPACES_ENV)):
        raise UsageError(f"namespace {ns} is not allowed: name it with --allow-namespace {ns}")
    conn = Connection.resolve(args.kubeconfig, args.kube_context)
    api = conn.api_client()
    try:
        identity = read_identity(api, conn.context)
        check_identity(identity, allowed_clusters(tuple(args.allow_cluster)), conn.context)
    finally:
        api.close()
    return Connection(conn.kubeconfig, conn.context, identity.uid), ns


def sweep_namespace(args: argparse.Namespace, everything: bool = False) -> list[str]:
    """inferchaos's marks on the cluster (cordons, taints, scaled Deployments, NetworkChaos)
    undone from the cluster itself, no ledger needed (its runner may be gone): those past
    their expiry, or with `everything` all of them, whoever made them (`revert --all`)."""
    from inferchaos.targets.kubernetes.sweep import sweep

    verb = "revert --all --target kubernetes" if everything else "recover --expired"
    conn, ns = namespace_connection(args, verb)
    done = sweep(conn, ns, now=math.inf if everything else None)
    for line in done:
        print(f"swept: {line}")
    what = "inferchaos change(s)" if everything else "expired change(s)"
    print(f"inferchaos: {len(done)} {what} undone in cluster {conn.cluster}, namespace {ns}")
    return done


def recover_from_cluster(args: argparse.Namespace, everything: bool = False) -> int:
    """The runs' ledgers kept in the namespace (one ConfigMap per run): every change still
    applied by a runner whose pod is gone, or past its expiry (a person's run), or with
    `everything` all of them, undone through the operator's own connection. Returns how
    many undos failed."""
    import time

    from inferchaos.faults.cluster_ledger import entries_of
    from inferchaos.faults.ledger import open_of
    from inferchaos.faults.undo import via
    from inferchaos.targets.kubernetes import runledger

    verb = "revert --all --target kubernetes" if everything else "recover --expired"
    conn, ns = namespace_connection(args, verb)
    ledger, failed = ledger_file(args.ledger, write=True), 0
    for run in runledger.ledgers(conn, ns):
        still = open_of(entries_of(run.lines))
        who = f"{run.name} ({run.operator or 'unknown operator'}" + (f", pod {run.runner_pod})" if run.runner_pod else ")")
        if not still:
            print(runledger.delete(conn, ns, run.name))
            continue
        if not (everything or args.force):
            if run.runner_pod and runledger.runner_alive(conn, ns, run.runner_pod):
                print(f"left {who}: its runner is still running and will revert it")
                continue
            if not run.runner_pod and (run.expires_at is None or run.expires_at > time.time()):
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.expires_at)) if run.expires_at else "never"
                print(f"left {who}: applied from outside the cluster, expires {when}; --force to undo now")
                continue
        print(f"recovering {who}: {len(still)} change(s) still applied")
        with via(conn):
            bad, _ = undo(ledger, still, force=True)
        failed += bad
    return failed


def cmd_recover(args: argparse.Namespace) -> int:
    failed = 0
    if args.expired:
        failed += recover_from_cluster(args)
        sweep_namespace(args)
    ledger = ledger_file(args.ledger)
    entries = ledger.open_entries()
    if not entries:
        print(f"inferchaos: nothing to recover: every change in {args.ledger} is reverted")
        return 1 if failed else 0
    bad, _ = undo(ledger, entries, args.force)
    return 1 if failed or bad else 0



VERBS = {"recover": cmd_recover}
