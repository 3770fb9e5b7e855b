"""The `inferchaos` command line: the local cluster, faults by hand, live numbers, reports.

Exit codes: 0 success; 1 the target or a fault failed, or nothing is running where a
cluster was expected (`status`); 2 bad input (options, parameters, files, a cluster that
is not there to inject into), with one line on stderr and nothing started or injected.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from inferchaos.errors import InferchaosError, UsageError

if TYPE_CHECKING:
    from inferchaos.faults.base import Fault
    from inferchaos.faults.ledger import Entry, Ledger
    from inferchaos.targets.local.cluster import LocalCluster
    from inferchaos.targets.local.state import ClusterState

DEFAULT_STATE_DIR = Path(".inferchaos/cluster")
DEFAULT_LEDGER = Path(".inferchaos/ledger.jsonl")

EXIT_CODES = "exit codes: 0 ok, 1 target/fault failure or nothing running, 2 bad input (one line, nothing changed)"
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


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, and an option is spelt out
    (`--allow` must not silently mean one of the allow-lists)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        print(f"inferchaos: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0 seconds, got {text}")
    return value


def _sub(sub: argparse._SubParsersAction, verb: str, text: str, description: str, examples: str) -> Parser:
    return sub.add_parser(verb, help=text, description=textwrap.fill(description, 100),
                          epilog=f"examples:\n{examples}\n\n{EXIT_CODES}",
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def _state_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                   help="the local cluster's state directory (default: %(default)s)")


def _ledger_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER, help="the fault ledger (default: %(default)s)")


def build_parser() -> Parser:
    parser = Parser(prog="inferchaos", description="Chaos engineering for ML inference clusters.",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)

    up = _sub(sub, "up", "start the embedded local cluster",
              "Start the embedded local inference cluster: model store, feature store + pipeline, "
              "dependency proxy, N reference replicas and HAProxy in front.",
              "  inferchaos up                                  # foreground; Ctrl-C stops all\n"
              "  inferchaos up --detach --state-dir /tmp/ic     # background, for a game day\n"
              "  inferchaos up --detach --warm-pool 1 --prometheus\n"
              "  inferchaos up --replica-cmd 'mlserver start . --http-port {port}'")
    up.add_argument("--replicas", type=int, default=3, help="replicas behind the LB (default 3)")
    up.add_argument("--warm-pool", type=int, default=0, help="pre-loaded standby replicas (default 0)")
    up.add_argument("--provisioning-delay", type=float, default=2.0, metavar="S",
                    help="seconds before a dead replica's replacement starts (default 2)")
    up.add_argument("--replica-cmd", metavar="CMD",
                    help="server command in place of ours; placeholders {port} {name} {model} "
                         "{model_store} {feature_store} {device} {vgpu_dir}")
    up.add_argument("--ready-path", default="/v2/health/ready", help="readiness path checked by LB and supervisor")
    up.add_argument("--port", type=int, default=0, help="load balancer port (default: a free one)")
    up.add_argument("--oom", choices=["exit", "reject"], default="exit",
                    help="on device-memory exhaustion: exit like vLLM (default) or reject and stay up")
    up.add_argument("--startup-timeout", type=float, default=60.0, metavar="S")
    up.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                    help="extra option for the reference server, e.g. --server-arg=--batch-latency-ms=30")
    up.add_argument("--prometheus", action="store_true",
                    help="also run Prometheus scraping the replicas and HAProxy (needs the `prometheus` binary)")
    _state_dir_arg(up)
    up.add_argument("--detach", action="store_true", help="start in the background and return")

    for verb, text, example in (
            ("status", "show the local cluster",
             "  inferchaos status --state-dir /tmp/ic\n  inferchaos status --json    # exit 0 only when ready"),
            ("down", "stop the local cluster", "  inferchaos down --state-dir /tmp/ic")):
        p = _sub(sub, verb, text, text[0].upper() + text[1:] + ".", example)
        _state_dir_arg(p)
        if verb == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")

    faults = _sub(sub, "faults", "list the fault catalogue",
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
        p = _sub(sub, verb, text, description, example)
        p.add_argument("fault", metavar="FAULT", help="a fault id (`inferchaos faults` lists them)")
        p.add_argument("params", nargs="*", metavar="KEY=VALUE", help="the fault's parameters")
        _state_dir_arg(p)
        _ledger_arg(p)
        if verb == "plan":
            from inferchaos import kube_options

            p.add_argument("--target", choices=("local", "kubernetes"), default="local",
                           help="where it would land (kubernetes: the options below; it only reads)")
            kube_options.add_options(p.add_argument_group("--target kubernetes"))

    rev = _sub(sub, "revert", "undo a fault that inject left applied",
               "Undo one open ledger entry (by id, or a unique prefix of it), or every open fault with --all, "
               "with the same undo executors `inferchaos recover` uses. Entries whose runner is still alive "
               "(an experiment in progress) are left to it unless --force. Clusters are `down`'s business.",
               "  inferchaos revert 3f2a9c1b0d2e\n  inferchaos revert --all --ledger /tmp/ic-ledger.jsonl")
    rev.add_argument("id", nargs="?", metavar="ID", help="the ledger id `inject` printed")
    rev.add_argument("--all", action="store_true", help="every fault still applied")
    rev.add_argument("--force", action="store_true", help="also entries whose runner is still alive")
    _ledger_arg(rev)

    watch = _sub(sub, "watch", "live numbers of the running local cluster",
                 "Refresh requests/s and 5xx/s (HAProxy's counters), p99 (the replicas' "
                 "vllm:e2e_request_latency_seconds buckets), replicas ready, each HAProxy server's state and the "
                 "faults still applied (the ledger) every --interval seconds: in place on a terminal, one line "
                 "per refresh otherwise. Ctrl-C stops it.",
                 "  inferchaos watch --state-dir /tmp/ic\n  inferchaos watch --interval 5 | tee gameday.log\n"
                 "  inferchaos watch --once    # one reading over one interval")
    _state_dir_arg(watch)
    _ledger_arg(watch)
    watch.add_argument("--interval", type=_positive_seconds, default=1.0, metavar="S",
                       help="seconds between refreshes (default 1)")
    watch.add_argument("--once", action="store_true", help="print one reading and exit")

    rec = _sub(sub, "recover", "undo every change the ledger says is still applied",
               "Replay the undo of every ledger entry left open by a runner that died (SIGKILL, power loss) "
               "or by `inject`: faults, load generators, local clusters it started.",
               "  inferchaos recover\n  inferchaos recover --ledger ci/ledger.jsonl --force")
    _ledger_arg(rec)
    rec.add_argument("--force", action="store_true",
                     help="also undo entries whose runner is still alive (it would revert them itself)")
    rec.add_argument("--expired", action="store_true",
                     help="first sweep the Kubernetes namespace for inferchaos changes past their expiry "
                          "(cordons, taints, scaled Deployments, NetworkChaos), whoever made them; needs "
                          "--namespace and --allow-cluster (what the nightly CronJob runs first)")
    from inferchaos import kube_options

    kube_options.add_options(rec.add_argument_group("--expired on Kubernetes"))

    rep = _sub(sub, "report", "render a run's reports, or compare two runs",
               "Render a finished run's report directory (the --chaos-report DIR of a "
               "pytest run): timelines missing from it, summary.html, and the Allure HTML site from "
               "DIR/allure-results with the npm package `allure` when Node.js is present. With "
               "--compare, print what changed between two runs: verdict flips, newly breached SLOs, "
               "observed values that moved more than 10%; exit code 1 when anything regressed.",
               "  inferchaos report reports/out\n  inferchaos report --compare last/ tonight/")
    rep.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="the report directory (holds summary.json)")
    rep.add_argument("--allure-results", type=Path, metavar="DIR",
                     help="Allure results to render (default: DIR/allure-results)")
    rep.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"),
                     help="two summary.json files, or report directories holding them")

    from inferchaos.targets.inventory import command as inventory

    inv = _sub(sub, "inventory", "list inference workloads, their GPUs and owners (shadow AI)",
               inventory.DESCRIPTION, inventory.EXAMPLES)
    inventory.add_arguments(inv)

    from inferchaos import scaling_verbs as scaling

    for verb, text, description, examples, add in (
            ("autoscale", "queue-length autoscaling for the local cluster", scaling.AUTOSCALE,
             scaling.AUTOSCALE_EXAMPLES, scaling.add_autoscale),
            ("preheat", "keep N replicas serving ahead of a known spike", scaling.PREHEAT, scaling.PREHEAT_EXAMPLES,
             scaling.add_preheat)):
        p = _sub(sub, verb, text, description, examples)
        add(p)
        _state_dir_arg(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        verbs = {"up": cmd_up, "status": cmd_status, "down": cmd_down, "recover": cmd_recover, "report": cmd_report,
                 "faults": cmd_faults, "plan": cmd_plan, "inject": cmd_inject, "revert": cmd_revert,
                 "watch": cmd_watch, "inventory": cmd_inventory, "autoscale": cmd_scaling, "preheat": cmd_scaling}
        return verbs[args.verb](args)
    except UsageError as exc:
        print(f"inferchaos: error: {_one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except InferchaosError as exc:
        print(f"inferchaos: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _one_line(text: str) -> str:
    """A message echoes what it was given; a line break in that must not break the line."""
    return "\\n".join(text.splitlines()) if len(text.splitlines()) > 1 else text.strip()


# --------------------------------------------------------------------------- checking input
def _read_state(state_dir: Path) -> ClusterState | None:
    """The state file, or None when there is none; a path that cannot hold one is bad input."""
    from inferchaos.targets.local.state import read_state

    if state_dir.exists() and not state_dir.is_dir():
        raise UsageError(f"--state-dir {state_dir} is not a directory")
    try:
        return read_state(state_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise UsageError(f"cannot read the cluster state in {state_dir}: {exc}") from None


def _running_cluster(state_dir: Path) -> LocalCluster:
    """The local cluster to act on; not there, or not running, is bad input (exit 2)."""
    from inferchaos.targets.local.cluster import LocalCluster
    from inferchaos.targets.local.processes import group_alive

    state = _read_state(state_dir)
    if state is None:
        raise UsageError(f"no local cluster in {state_dir}: start one with "
                         f"`inferchaos up --detach --state-dir {state_dir}`")
    if state.phase != "ready" or not group_alive(state.supervisor_pgid):
        phase = state.phase if group_alive(state.supervisor_pgid) else f"{state.phase}, supervisor gone"
        raise UsageError(f"the cluster in {state_dir} is not running ({phase}): "
                         f"`inferchaos down --state-dir {state_dir}`, then `inferchaos up --detach`")
    return LocalCluster.attach(state_dir)


def _ledger(path: Path, write: bool = False) -> Ledger:
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


# --------------------------------------------------------------------------- the cluster
def cmd_up(args: argparse.Namespace) -> int:
    from inferchaos.targets.local.cluster import LocalCluster
    from inferchaos.targets.local.spec import ClusterSpec

    spec = ClusterSpec(
        replicas=args.replicas, warm_pool=args.warm_pool, provisioning_delay_s=args.provisioning_delay,
        replica_cmd=args.replica_cmd, ready_path=args.ready_path, lb_port=args.port, oom=args.oom,
        startup_timeout_s=args.startup_timeout, server_args=tuple(args.server_arg), prometheus=args.prometheus,
    ).validate()
    _read_state(args.state_dir)
    say = lambda line: print(f"inferchaos: {line}", file=sys.stderr, flush=True)  # noqa: E731
    cluster = LocalCluster(spec, args.state_dir, owner_pid=None if args.detach else _own_pid())
    if args.detach:
        cluster.start(progress=say)
        _print_urls(cluster)
        print(f"stop it with: inferchaos down --state-dir {args.state_dir}")
        return 0
    stop = _on_signals()
    try:
        cluster.start(progress=say)
        _print_urls(cluster)
        print("Ctrl-C stops the cluster", flush=True)
        while not stop() and cluster.running():
            time.sleep(0.2)
        if not stop():
            say(f"the cluster stopped by itself: {cluster.state.error or 'see ' + str(args.state_dir / 'logs')}")
            return 1
        return 0
    finally:
        say("stopping")
        cluster.stop()


def cmd_status(args: argparse.Namespace) -> int:
    from inferchaos.targets.local.cluster import LocalCluster
    from inferchaos.targets.local.processes import group_alive

    state = _read_state(args.state_dir)
    if state is None:
        print(f"inferchaos: no local cluster in {args.state_dir}", file=sys.stderr)
        return 1
    alive = group_alive(state.supervisor_pgid)
    phase = state.phase if alive or state.phase in ("stopped", "failed") else "dead (supervisor gone; run `inferchaos down`)"
    lb = {}
    if alive and state.haproxy_socket:
        try:
            lb = {s.name: s for s in LocalCluster.attach(args.state_dir).admin().servers()}
        except OSError:
            lb = {}
    if args.json:
        out = asdict(state)
        out["phase"] = phase
        out["lb_servers"] = [asdict(s) | {"state": s.state} for s in lb.values()]
        print(json.dumps(out, indent=2))
        return 0 if phase == "ready" else 1
    print(f"cluster: {phase}   state dir: {state.state_dir}")
    if state.error:
        print(f"error: {state.error}")
    print(f"load balancer: {state.lb_url}   stats: {state.stats_url}/stats   LB metrics: {state.stats_url}/metrics")
    print(f"model store: {state.model_store_url}   feature store: {state.feature_store_url}")
    if state.proxy_url:
        print(f"dependency proxy: {state.proxy_url}/routes   replicas use {state.via_proxy}")
    prometheus = getattr(state, "prometheus_url", None)
    if prometheus:
        print(f"prometheus: {prometheus}")
    print(f"{'REPLICA':<12}{'SLOT':<6}{'PORT':<7}{'PID':<9}{'DEVICE':<8}{'PHASE':<10}{'LB':<10}COLD START")
    for r in state.replicas:
        slot = f"r{r.slot}" if r.slot else "warm"
        lb_state = lb[slot].state if slot in lb else "-"
        cold = f"{r.cold_start_s:.2f}s" if r.cold_start_s is not None else "-"
        print(f"{r.name:<12}{slot:<6}{r.port:<7}{r.pid:<9}{r.device:<8}{r.phase:<10}{lb_state:<10}{cold}")
    for p in state.pending:
        slot = f"r{p['slot']}" if p["slot"] else "warm"
        print(f"{'(pending)':<12}{slot:<6}replacement starts in {max(0.0, p['due_wall'] - time.time()):.1f}s "
              "(provisioning delay)")
    return 0 if phase == "ready" else 1


def cmd_down(args: argparse.Namespace) -> int:
    from inferchaos.targets.local.cluster import LocalCluster

    if _read_state(args.state_dir) is None:
        print(f"inferchaos: no local cluster in {args.state_dir}; nothing to stop")
        return 0
    leftovers = LocalCluster.attach(args.state_dir).stop()
    extra = f" (killed {len(leftovers)} process groups left behind)" if leftovers else ""
    print(f"inferchaos: stopped the cluster in {args.state_dir}{extra}")
    return 0


# --------------------------------------------------------------------------- faults by hand
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
    ledger = _ledger(args.ledger, write=for_inject)
    cluster = _running_cluster(args.state_dir)
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
        fault = spec.build(target, _ledger(args.ledger), params)
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
    ledger = _ledger(args.ledger, write=True)
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
    failed, skipped = _undo(ledger, chosen, args.force)
    return 1 if failed or skipped else 0


def _undo(ledger: Ledger, entries: list[Entry], force: bool) -> tuple[int, int]:
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


def _sweep_expired(args: argparse.Namespace) -> None:
    """Expired marks on the cluster, undone: no ledger needed (its runner may be gone)."""
    from inferchaos.targets.kubernetes import Connection
    from inferchaos.targets.kubernetes.identity import allowed_clusters, check_identity, read_identity
    from inferchaos.targets.kubernetes.settings import ALLOW_NAMESPACES_ENV, SYSTEM_NAMESPACES, _env_list
    from inferchaos.targets.kubernetes.sweep import sweep

    ns = args.namespace
    if not ns:
        raise UsageError("recover --expired needs --namespace NS (the namespace to sweep)")
    if ns in SYSTEM_NAMESPACES or ns not in (*args.allow_namespace, *_env_list(ALLOW_NAMESPACES_ENV)):
        raise UsageError(f"namespace {ns} is not allowed: name it with --allow-namespace {ns}")
    conn = Connection.resolve(args.kubeconfig, args.kube_context)
    api = conn.api_client()
    try:
        identity = read_identity(api, conn.context)
        check_identity(identity, allowed_clusters(tuple(args.allow_cluster)), conn.context)
    finally:
        api.close()
    pinned = Connection(conn.kubeconfig, conn.context, identity.uid)
    done = sweep(pinned, ns)
    for line in done:
        print(f"swept: {line}")
    print(f"inferchaos: {len(done)} expired change(s) undone in cluster {identity.uid}, namespace {ns}")


def cmd_recover(args: argparse.Namespace) -> int:
    if args.expired:
        _sweep_expired(args)
    ledger = _ledger(args.ledger)
    entries = ledger.open_entries()
    if not entries:
        print(f"inferchaos: nothing to recover: every change in {args.ledger} is reverted")
        return 0
    failed, _ = _undo(ledger, entries, args.force)
    return 1 if failed else 0


def cmd_watch(args: argparse.Namespace) -> int:
    from inferchaos.errors import TargetError
    from inferchaos.watch import watch

    cluster = _running_cluster(args.state_dir)
    ledger = _ledger(args.ledger)

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    try:
        return watch(cluster, ledger, args.interval, args.once, sys.stdout.isatty(), write)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        raise TargetError(f"lost the cluster in {args.state_dir}: {exc}") from None


def cmd_scaling(args: argparse.Namespace) -> int:
    from inferchaos import scaling_verbs

    return getattr(scaling_verbs, args.verb)(args, _running_cluster(args.state_dir))


def cmd_inventory(args: argparse.Namespace) -> int:
    from inferchaos.targets.inventory.command import run

    return run(args)


# --------------------------------------------------------------------------- reports
def cmd_report(args: argparse.Namespace) -> int:
    from inferchaos.reports import compare, load_summary, render, replot_missing, write_summary_html
    from inferchaos.reports.allure_site import render as render_allure

    if args.compare:
        if args.dir is not None:
            raise UsageError("give either DIR or --compare OLD NEW, not both")
        old, new = (load_summary(p) for p in args.compare)
        changes = compare(old, new)
        print(render(changes, str(args.compare[0]), str(args.compare[1])))
        return 1 if any(c.regression for c in changes) else 0
    if args.dir is None:
        raise UsageError("report needs DIR (a --chaos-report directory) or --compare OLD NEW")
    summary = load_summary(args.dir)
    for png in replot_missing(summary, args.dir):
        print(f"timeline: {png}")
    print(f"summary: {write_summary_html(summary, args.dir)}")
    results = args.allure_results or args.dir / "allure-results"
    if args.allure_results and not results.is_dir():
        raise UsageError(f"no Allure results directory {results}")
    rendered = render_allure(results, args.dir / "allure-report")
    print(rendered.message if rendered.ok else f"Allure HTML not rendered: {rendered.message}")
    return 0


def _print_urls(cluster) -> None:  # type: ignore[no-untyped-def]
    s = cluster.state
    ready = sum(r.phase == "ready" for r in s.active())
    print(f"cluster ready: {ready} replicas, {len(s.standby())} warm")
    print(f"  load balancer  {s.lb_url}")
    print(f"  HAProxy stats  {s.stats_url}/stats")
    prometheus = getattr(s, "prometheus_url", None)
    if prometheus:
        print(f"  Prometheus     {prometheus}")
    print(f"  state dir      {s.state_dir}", flush=True)


def _own_pid() -> int:
    return os.getpid()


def _on_signals():  # type: ignore[no-untyped-def]
    """Ctrl-C and SIGTERM end the foreground `up` through its `finally`, not mid-teardown."""
    flag = {"stop": False}

    def handler(*_: object) -> None:
        flag["stop"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return lambda: flag["stop"]


if __name__ == "__main__":
    sys.exit(main())
