"""`faults`, `plan`, `inject`, `revert`: a fault by hand, for a game day."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from inferchaos import kube_options
from inferchaos.cli.inputs import add_verb, duration, ledger_arg, ledger_file, running_cluster, state_dir_arg
from inferchaos.cli.recover import namespace_connection, recover_from_cluster, sweep_namespace, undo
from inferchaos.ground.errors import FaultError, UsageError

#: ledger entries that are not faults: a cluster (`down` ends it), a load (`load` or `recover`).
NOT_FAULTS = ("cluster", "load")

if TYPE_CHECKING:
    from inferchaos.faults.base import Fault, Landing
    from inferchaos.faults.ledger import Ledger
    from inferchaos.targets.kubernetes.settings import KubeSettings


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
             "  inferchaos inject pipeline_lag mode=both read_latency_ms=2000\n"
             "  inferchaos inject replica_hang --for 5m     # reverts by itself after 5 minutes\n"
             "  inferchaos inject replica_hang --for 10m --target kubernetes --kube-context staging \\\n"
             "      --allow-cluster 6f1c0b2e-... --namespace ml --allow-namespace ml --selector app=vllm")):
        p = add_verb(sub, verb, text, description, example)
        p.add_argument("fault", metavar="FAULT", help="a fault id (`inferchaos faults` lists them)")
        p.add_argument("params", nargs="*", metavar="KEY=VALUE", help="the fault's parameters")
        state_dir_arg(p)
        ledger_arg(p)
        p.add_argument("--target", choices=("local", "kubernetes"), default="local",
                       help="where it lands: the local cluster (default) or a namespace (the options below)")
        if verb == "inject":
            p.add_argument("--for", dest="for_s", type=duration, metavar="DURATION",
                           help="revert by itself DURATION (90, 90s, 5m, 1h) after the fault landed: a timer "
                                "process here, and on Kubernetes every change also expires in the cluster then "
                                "(at least 10 s), so it ends even when this machine is gone")
        kube_options.add_options(p.add_argument_group("--target kubernetes"))

    rev = add_verb(sub, "revert", "undo a fault that inject left applied",
                  "Undo one open ledger entry (by id, or a unique prefix of it), or every open fault with --all, "
                  "with the same undo executors `inferchaos recover` uses. Entries whose runner is still alive "
                  "(an experiment in progress) are left to it unless --force. Clusters are `down`'s business.",
                  "  inferchaos revert 3f2a9c1b0d2e\n  inferchaos revert --all --ledger /tmp/ic-ledger.jsonl")
    rev.add_argument("id", nargs="?", metavar="ID", help="the ledger id `inject` printed")
    rev.add_argument("--all", action="store_true",
                     help="every fault still applied; with --target kubernetes also every inferchaos change in "
                          "the namespace, whoever made it (the kill switch)")
    rev.add_argument("--force", action="store_true", help="also entries whose runner is still alive")
    # inject --for's timer: wait this many seconds from the landing its stdin announces
    rev.add_argument("--after-landing", dest="after_landing", type=float, help=argparse.SUPPRESS)
    ledger_arg(rev)
    rev.add_argument("--target", choices=("local", "kubernetes"), default="local",
                     help="kubernetes: an ID is undone through the connection the options below make; --all "
                          "also sweeps the namespace (the options below)")
    kube_options.add_options(rev.add_argument_group("--target kubernetes (revert --all)"))



def cmd_faults(args: argparse.Namespace) -> int:
    from inferchaos.faults.catalogue import CATALOGUE, lookup
    from inferchaos.faults.registry import kinds_of

    specs = [lookup(args.fault)] if args.fault else list(CATALOGUE.values())
    for n, spec in enumerate(specs):
        if n:
            print()
        kinds = kinds_of(spec.name)
        print(f"{spec.name}: {spec.summary}")
        print(f"  targets:      {', '.join(kinds)}")
        print(f"  blast radius: {spec.blast_radius}")
        print(f"  landed when:  {spec.effect}")
        print(f"  runbook:      {spec.runbook}")
        if spec.standalone_refusal:
            print(f"  by hand:      no — {spec.standalone_refusal}")
        print("  parameters (KEY=DEFAULT):" if spec.params else "  parameters: none")
        for p in spec.params:
            own = [f"{k}: {_shown(p.default_on(k))}" for k in kinds] if p.defaults else []
            where = f" ({p.only} only)" if p.only else (f" (default on {'; '.join(own)})" if own else "")
            print(f"    {p.name + '=' + _shown(p.default):<28}{p.meaning}{where} [{p.accepts()}]")
    return 0


def _shown(value: object) -> str:
    return "none" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))


def _fault(args: argparse.Namespace, for_inject: bool) -> Iterator[tuple[Fault, Ledger, str]]:
    """Parse and check everything, in the order that touches least: fault id, parameters,
    ledger, the target, the fault's own checks and its blast radius. Nothing is changed.
    Yields (fault, ledger, where it lands, in words); a Kubernetes connection is closed after."""
    from inferchaos.faults.catalogue import lookup

    spec = lookup(args.fault)
    if for_inject and spec.standalone_refusal:
        raise UsageError(spec.standalone_refusal)
    params = spec.parse(args.params)
    spec.args(args.target, params)  # a parameter this target cannot honour: refused before it is reached
    ledger = ledger_file(args.ledger, write=for_inject)
    if args.target == "kubernetes":
        from dataclasses import replace

        from inferchaos.targets.kubernetes import KubeTarget

        for_s = getattr(args, "for_s", None)
        with KubeTarget(kube_settings(args, for_s)) as target:
            fault = spec.on(target, ledger=ledger, **params)
            if for_s is not None:
                # the cluster's own expiry counts from each change, the timer from the landing,
                # which may come up to land_within_s later: the backstop must not end it first
                target.settings = replace(target.settings, expire_after_s=max(
                    10, math.ceil(for_s + fault.land_within_s)))
            yield fault, ledger, f"in {target.describe()}"
        return
    cluster = running_cluster(args.state_dir)
    yield spec.on(cluster, ledger=ledger, **params), ledger, f"on the cluster in {cluster.state_dir}"


def kube_settings(args: argparse.Namespace, for_s: float | None = None) -> KubeSettings:
    """The Kubernetes options as the pytest session reads them. A plan or a fault by hand
    sends no load, so no --endpoint is needed; `inject --for` makes every change expire in
    the cluster when the injection ends (at least 10 s, the sweeper's granularity)."""
    from dataclasses import replace

    def get(name: str) -> object:
        value = getattr(args, name.lstrip("-").replace("-", "_"))
        if name == "--endpoint" and not value:
            return "http://endpoint-not-needed-by-hand"
        return value

    settings = kube_options.settings(get)
    return settings if for_s is None else replace(settings, expire_after_s=max(10, math.ceil(for_s)))


def _plan(fault: Fault) -> list[str]:
    try:
        return fault.plan()
    except UsageError as exc:
        raise UsageError(str(exc) if str(exc).startswith(fault.name) else f"{fault.name}: {exc}") from None


def cmd_plan(args: argparse.Namespace) -> int:
    from inferchaos.faults.catalogue import lookup

    spec = lookup(args.fault)
    with contextlib.closing(_fault(args, for_inject=False)) as made:
        fault, _, where = next(made)
        lines = _plan(fault)
    print(f"plan: {spec.name} {where} (nothing is changed)")
    for line in lines or ["(nothing to act on right now)"]:
        print(f"  {line}")
    print(f"blast radius: {spec.blast_radius}")
    if spec.standalone_refusal:
        print(f"by hand: {spec.standalone_refusal}")
    elif args.target == "local":
        params = " ".join(args.params)
        print(f"apply it with: inferchaos inject {spec.name}{' ' + params if params else ''} --state-dir {args.state_dir}")
    return 0


def cmd_inject(args: argparse.Namespace) -> int:
    with contextlib.closing(_fault(args, for_inject=True)) as made:
        fault, ledger, where = next(made)
        still = [e for e in ledger.open_entries() if e.fault not in NOT_FAULTS]
        if still:
            names = ", ".join(f"{e.fault} ({e.id})" for e in still)
            raise UsageError(f"the ledger {ledger.path} shows changes not reverted: {names}; revert them first "
                             f"with `inferchaos revert --all --ledger {ledger.path}`")
        lines = _plan(fault)  # the blast radius is checked here, before anything is journalled
        try:
            fault.prepare()  # journals the entry, before any change
            # the timer next: this process may die any moment from now (a laptop closed); its
            # countdown starts when the landing is told (or when this process ends untold)
            timer = None if args.for_s is None else _revert_timer(fault, args.ledger, args.for_s)
            fault.inject()
            landing = _landing(fault)
            if not landing.ok:
                raise FaultError(f"{fault.name} did not land, reverted: {landing.evidence} "
                                 f"(checked for {fault.land_within_s:g} s)")
            if timer is not None:
                _start_countdown(timer)
            fault.settle()  # its own threads end with this process: finish what they hold
        except BaseException:
            fault.revert()  # whatever got applied is undone before the error is told
            raise
    entry = fault._entry
    assert entry is not None
    print(f"inferchaos: injected {fault.name} {where}: ledger id {entry.id} (by {entry.operator})")
    for line in lines:
        print(f"  {line}")
    print(f"  landed: {landing.evidence}")
    if timer is not None:
        print(f"it reverts by itself in {args.for_s:g} s from its landing (timer pid {timer.pid}); sooner with:\n"
              f"  inferchaos revert {entry.id} --ledger {args.ledger}")
        return 0
    print(f"it stays applied. Revert it with:\n  inferchaos revert {entry.id} --ledger {args.ledger}\n"
          f"(or everything: inferchaos revert --all --ledger {args.ledger})")
    return 0


def _landing(fault: Fault) -> Landing:
    """The effect read back from the target, as an experiment waits for it before its hold:
    a fault by hand that did not land is a game day spent watching nothing."""
    from inferchaos.faults.base import Landing

    deadline = time.monotonic() + fault.land_within_s
    while True:
        try:
            landing = fault.landed()
        except Exception as exc:  # noqa: BLE001 - a check that cannot read the target proves nothing
            landing = Landing(False, f"could not check: {type(exc).__name__}: {exc}")
        if landing.ok or time.monotonic() >= deadline:
            return landing
        time.sleep(0.1)


def _revert_timer(fault: Fault, ledger: Path, for_s: float) -> subprocess.Popen:
    """`inject --for`: a process of its own session (it outlives this one, and the terminal's
    Ctrl-C) that reverts the entry through the ledger, as `revert` would, `for_s` seconds
    after the fault landed. It is started before the change, so a death of this process
    mid-inject still ends the fault; its countdown starts when `_start_countdown` tells it
    the landing through its stdin, or, told nothing, when that pipe closes (this process
    ended: the latest the fault can have landed). It ends sooner when someone reverts the
    entry first (this process too, when the fault did not land)."""
    assert fault._entry is not None
    entry_id = fault._entry.id
    log = ledger.parent / f"timer-{entry_id}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "inferchaos.cli", "revert", entry_id, "--ledger", str(ledger),
                                 "--force", "--after-landing", repr(for_s), *_reached_through(fault)],
                                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _reached_through(fault: Fault) -> list[str]:
    """The options that reach the cluster a Kubernetes fault changes, as this process reached
    it: a ledger names the cluster (its UID), never how to reach it, so the timer is told."""
    from inferchaos.targets.kubernetes.connection import IN_CLUSTER

    conn = getattr(getattr(fault, "kube", None), "connection", None)
    if conn is None:
        return []
    return ["--target", "kubernetes", *(["--kubeconfig", conn.kubeconfig] if conn.kubeconfig else []),
            *(["--kube-context", conn.context] if conn.context != IN_CLUSTER else [])]


def _start_countdown(timer: subprocess.Popen) -> None:
    """Tell the timer the fault landed now, on the monotonic clock (system-wide on Linux, so
    the timer counts from this instant even if it reads the line late)."""
    assert timer.stdin is not None
    try:
        timer.stdin.write(f"landed {time.monotonic()!r}\n".encode())
        timer.stdin.close()
    except OSError as exc:  # it died: nothing would revert the fault, so it is not left applied
        raise FaultError(f"the --for timer (pid {timer.pid}) is gone ({exc}), so nothing would revert "
                         f"the fault by itself: reverted") from None


def cmd_revert(args: argparse.Namespace) -> int:
    if args.id and args.all:
        raise UsageError("give a ledger ID or --all, not both")
    if not args.id and not args.all:
        raise UsageError("revert needs a ledger ID (inject printed it; `inferchaos watch` shows it) or --all")
    ledger = ledger_file(args.ledger, write=True)
    if args.after_landing is not None and not _wait_from_landing(args.after_landing, ledger, args.id):
        print(f"inferchaos: {args.id} was reverted before its time")
        return 0
    applied = [e for e in ledger.open_entries() if e.fault not in NOT_FAULTS]
    if args.all:
        from inferchaos.faults.undo import via

        kill_switch = args.target == "kubernetes"
        operator = contextlib.nullcontext()
        if kill_switch:  # bad options: exit 2, nothing undone; else the operator's own way in
            operator = via(namespace_connection(args, "revert --all --target kubernetes")[0])
        failed = skipped = 0
        if applied:  # the kill switch takes everything, also what a live runner applied
            with operator:
                failed, skipped = undo(ledger, applied, args.force or kill_switch)
        else:
            print(f"inferchaos: nothing to revert in {args.ledger}: no fault in it is still applied")
        if kill_switch:  # every run's ledger in the namespace, then every mark
            failed += recover_from_cluster(args, everything=True)
            sweep_namespace(args, everything=True)
        return 1 if failed or skipped else 0
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
    if args.target != "kubernetes":
        failed, skipped = undo(ledger, chosen, args.force)
        return 1 if failed or skipped else 0
    from inferchaos.faults.undo import via
    from inferchaos.targets.kubernetes import Connection

    with via(Connection.resolve(args.kubeconfig, args.kube_context)):  # the operator's own way in
        failed, skipped = undo(ledger, chosen, args.force)
    return 1 if failed or skipped else 0


#: how stale a landing instant from the injecting process may be and still be used (the
#: timer reads the line late when the inject was quicker than its own start).
LANDING_CLOCK_SLACK_S = 60.0


def _wait_from_landing(for_s: float, ledger: Ledger, entry_id: str) -> bool:
    """`inject --for`'s timer: True `for_s` seconds (monotonic clock) after the landing that
    stdin announces (`landed <time.monotonic()>`), or after stdin closed with no landing told
    (the injecting process ended mid-inject), if the entry is still applied then; False as
    soon as it is not, whether counting has started or not."""
    fd = sys.stdin.fileno()
    told, start = b"", None
    while True:
        if not any(e.id == entry_id for e in ledger.open_entries()):
            return False
        if start is None:
            if select.select([fd], [], [], 0.5)[0]:
                chunk = os.read(fd, 256)
                told += chunk
                if b"\n" in told or not chunk:
                    start = _landing_instant(told)
                    how = "it landed" if chunk else "inject ended without telling a landing"
                    print(f"inferchaos: {entry_id}: counting {for_s:g} s from monotonic {start:.3f} ({how})",
                          flush=True)
            continue
        left = start + for_s - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(0.5, left))


def _landing_instant(told: bytes) -> float:
    """The monotonic instant the injecting process said the fault landed at; now, when it
    said nothing usable (it ended untold) or the instant is not plausibly on this clock."""
    now = time.monotonic()
    words = told.split(b"\n", 1)[0].split()
    if len(words) == 2 and words[0] == b"landed":
        try:
            at = float(words[1])
        except ValueError:
            return now
        if now - LANDING_CLOCK_SLACK_S <= at <= now:
            return at
    return now



VERBS = {"faults": cmd_faults, "plan": cmd_plan, "inject": cmd_inject, "revert": cmd_revert}
