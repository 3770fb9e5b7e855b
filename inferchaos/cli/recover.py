"""`recover`: undo what a runner that died left applied, and sweep what expired."""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import TYPE_CHECKING

from inferchaos.cli.inputs import add_verb, ledger_arg, ledger_file, printable
from inferchaos.ground.errors import UsageError

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
    undo may need its cluster. Every entry on its own: one that fails, however oddly,
    is said in one line and the others still run. Returns (failed, skipped)."""
    from inferchaos.faults.undo import run_all
    from inferchaos.ground.errors import FaultError
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
            run_all(entry.undo, lambda done, e=entry: print(f"{e.fault} {e.id}: {printable(done)}"))
        except Exception as exc:  # noqa: BLE001 - one entry must not stop the recovery of the others
            failed += 1
            why = printable(str(exc) if isinstance(exc, FaultError) else f"{type(exc).__name__}: {exc}")
            print(f"{entry.fault} {entry.id}: FAILED: {why}", file=sys.stderr)
            _close(ledger, entry, ok=False, detail=why)
            continue
        _close(ledger, entry, ok=True, detail="recovered")
        print(f"{entry.fault} {entry.id}: reverted")
    return failed, skipped


def _close(ledger: Ledger, entry: Entry, ok: bool, detail: str) -> None:
    try:
        ledger.reverted(entry, ok=ok, detail=detail)
    except Exception as exc:  # noqa: BLE001 - the undo ran; the record of it is what failed
        print(f"{entry.fault} {entry.id}: not recorded in {ledger.path}: {printable(str(exc))}", file=sys.stderr)


def refused_in_cluster(entry: Entry, cluster: str, namespace: str, run: str) -> str | None:
    """Why an entry of a namespace's ledger may not be replayed, or None. Whoever can write
    ConfigMaps in the namespace could have written it: it may hold only Kubernetes steps,
    on this cluster, for this namespace's own ledger."""
    from inferchaos.faults.undo import KUBE_OPS
    from inferchaos.targets.kubernetes.runledger import PREFIX

    t = entry.target
    if t.get("namespace") != namespace or run != PREFIX + str(t.get("ledger")):
        return f"it names another namespace or ledger than {namespace}/{run}"
    if not isinstance(t.get("connection"), dict) or t["connection"].get("cluster") != cluster:
        return f"it names another cluster than {cluster}"
    for u in entry.undo:
        if u.op not in KUBE_OPS:
            return f"{u.op!r} is not a Kubernetes step (a cluster's ledger holds nothing else)"
        conn = u.args.get("conn")
        if not isinstance(conn, dict) or conn.get("cluster") != cluster:
            return f"its {u.op} step names another cluster than {cluster}"
        if "namespace" in u.args and u.args["namespace"] != namespace:
            return f"its {u.op} step names namespace {printable(str(u.args['namespace']))}, not {namespace}"
    return None


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
    verb = "revert --all --target kubernetes" if everything else "recover --expired"
    conn, ns = namespace_connection(args, verb)
    ledger, failed = ledger_file(args.ledger, write=True), 0
    from inferchaos.targets.kubernetes import runledger

    try:
        runs = runledger.ledgers(conn, ns)
    except Exception as exc:  # noqa: BLE001 - the sweep still runs after this
        print(f"the runs' ledgers in {ns}: FAILED: {printable(str(exc))}", file=sys.stderr)
        return 1
    for run in runs:
        try:
            failed += _recover_run(args, conn, ns, ledger, run, everything)
        except Exception as exc:  # noqa: BLE001 - one ledger must not stop the others, nor the sweep
            failed += 1
            print(f"{printable(run.name)}: FAILED: {printable(str(exc))}", file=sys.stderr)
    return failed


def _recover_run(args: argparse.Namespace, conn: Connection, ns: str, ledger: Ledger, run: object,
                 everything: bool) -> int:
    import time

    from inferchaos.faults.cluster_ledger import entries_of
    from inferchaos.faults.ledger import open_of
    from inferchaos.faults.undo import via, within
    from inferchaos.targets.kubernetes import runledger

    refused: list[str] = []
    still = open_of(entries_of(run.lines, refused))
    who = printable(f"{run.name} ({run.operator or 'unknown operator'}"
                    + (f", pod {run.runner_pod})" if run.runner_pod else ")"))
    for line in refused:
        print(f"{printable(run.name)}: {printable(line)}", file=sys.stderr)
    failed = len(refused)
    kept = []
    for entry in still:
        why = refused_in_cluster(entry, str(conn.cluster), ns, run.name)
        if why:
            print(f"refused {entry.fault} {entry.id} in {who}: {why}: nothing done", file=sys.stderr)
            failed += 1
        else:
            kept.append(entry)
    if not still and not refused:
        print(runledger.delete(conn, ns, run.name))
        return 0
    if not kept:
        return failed
    if not (everything or args.force):
        if run.runner_pod and runledger.runner_alive(conn, ns, run.runner_pod):
            print(f"left {who}: its runner is still running and will revert it")
            return failed
        if not run.runner_pod and (run.expires_at is None or run.expires_at > time.time()):
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.expires_at)) if run.expires_at else "never"
            print(f"left {who}: applied from outside the cluster, expires {when}; --force to undo now")
            return failed
    print(f"recovering {who}: {len(kept)} change(s) still applied")
    with via(conn), within(ns):
        bad, _ = undo(ledger, kept, force=True)
    return failed + bad


def cmd_recover(args: argparse.Namespace) -> int:
    """Exit 2 (nothing done) for bad options or a ledger someone else could have written;
    else every entry and every run on its own, the sweep whatever they did, and exit 1 if
    anything was refused or failed (each said in one line)."""
    import contextlib

    from inferchaos.faults.undo import via

    ledger = ledger_file(args.ledger)
    ledger.open_entries()  # a ledger that is not the user's own: exit 2 before anything
    failed = 0
    if args.expired:
        namespace_connection(args, "recover --expired")  # bad options: exit 2, nothing undone
        try:
            failed += recover_from_cluster(args)
        finally:
            try:
                sweep_namespace(args)
            except Exception as exc:  # noqa: BLE001 - said, and counted
                failed += 1
                print(f"the sweep of {args.namespace}: FAILED: {printable(str(exc))}", file=sys.stderr)
    entries = ledger.open_entries()
    for line in ledger.refused:
        print(printable(line), file=sys.stderr)
    failed += len(ledger.refused)
    if not entries:
        print(f"inferchaos: nothing to recover: every change in {args.ledger} is reverted")
        return 1 if failed else 0
    operator = contextlib.nullcontext()
    if args.kubeconfig or args.kube_context:  # the operator's own way to the clusters the ledger names
        from inferchaos.targets.kubernetes import Connection

        operator = via(Connection.resolve(args.kubeconfig, args.kube_context))
    with operator:
        bad, _ = undo(ledger, entries, args.force)
    return 1 if failed or bad else 0



VERBS = {"recover": cmd_recover}
