"""The `inferchaos` command line.

Exit codes: 0 success; 1 the target or a fault failed, or nothing is running where a
cluster was expected; 2 bad input (options, files, a set-up that cannot start), with one
line on stderr and nothing started or injected.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import NoReturn

from inferchaos.errors import InferchaosError, UsageError

DEFAULT_STATE_DIR = Path(".inferchaos/cluster")
DEFAULT_LEDGER = Path(".inferchaos/ledger.jsonl")

EPILOG = """\
examples:
  inferchaos up                                  # 3 replicas behind HAProxy; Ctrl-C stops all
  inferchaos up --detach --state-dir /tmp/ic     # start in the background
  inferchaos status --state-dir /tmp/ic          # replicas, readiness, LB server states
  inferchaos down --state-dir /tmp/ic            # stop everything it started
  inferchaos up --replica-cmd 'mlserver start . --http-port {port}'
  inferchaos recover                             # undo what a killed runner left applied
  inferchaos report reports/out                  # summary.html, and the Allure site when Node.js is there
  inferchaos report --compare last/ tonight/     # what changed night to night; exit 1 on a regression

exit codes: 0 ok, 1 target/fault failure or nothing running, 2 bad input
"""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"inferchaos: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> Parser:
    parser = Parser(prog="inferchaos", description="Chaos engineering for ML inference clusters.",
                    epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)

    up = sub.add_parser("up", help="start the embedded local cluster",
                        description="Start the embedded local inference cluster: model store, feature "
                        "store + pipeline, N reference replicas and HAProxy in front.")
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
    up.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    up.add_argument("--detach", action="store_true", help="start in the background and return")

    rec = sub.add_parser("recover", help="undo every change the ledger says is still applied",
                         description="Replay the undo of every ledger entry left open by a runner that "
                         "died (SIGKILL, power loss): faults, load generators, local clusters it started.")
    rec.add_argument("--ledger", type=Path, default=DEFAULT_LEDGER, help="default: %(default)s")
    rec.add_argument("--force", action="store_true",
                     help="also undo entries whose runner is still alive (it would revert them itself)")

    rep = sub.add_parser("report", help="render a run's reports, or compare two runs",
                         description="Render a finished run's report directory (the --chaos-report DIR of a "
                         "pytest run): timelines missing from it, summary.html, and the Allure HTML site from "
                         "DIR/allure-results with the npm package `allure` when Node.js is present. With "
                         "--compare, print what changed between two runs: verdict flips, newly breached SLOs, "
                         "observed values that moved more than 10%%; exit code 1 when anything regressed.")
    rep.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="the report directory (holds summary.json)")
    rep.add_argument("--allure-results", type=Path, metavar="DIR",
                     help="Allure results to render (default: DIR/allure-results)")
    rep.add_argument("--compare", nargs=2, type=Path, metavar=("OLD", "NEW"),
                     help="two summary.json files, or report directories holding them")

    for verb, text in (("status", "show the local cluster"), ("down", "stop the local cluster")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
        if verb == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        verbs = {"up": cmd_up, "status": cmd_status, "down": cmd_down, "recover": cmd_recover, "report": cmd_report}
        return verbs[args.verb](args)
    except UsageError as exc:
        print(f"inferchaos: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except InferchaosError as exc:
        print(f"inferchaos: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_up(args: argparse.Namespace) -> int:
    from targets.local.cluster import LocalCluster
    from targets.local.spec import ClusterSpec

    spec = ClusterSpec(
        replicas=args.replicas, warm_pool=args.warm_pool, provisioning_delay_s=args.provisioning_delay,
        replica_cmd=args.replica_cmd, ready_path=args.ready_path, lb_port=args.port, oom=args.oom,
        startup_timeout_s=args.startup_timeout, server_args=tuple(args.server_arg),
    )
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
    from targets.local.cluster import LocalCluster
    from targets.local.processes import group_alive
    from targets.local.state import read_state

    state = read_state(args.state_dir)
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
    from targets.local.cluster import LocalCluster
    from targets.local.state import read_state

    if read_state(args.state_dir) is None:
        print(f"inferchaos: no local cluster in {args.state_dir}; nothing to stop")
        return 0
    leftovers = LocalCluster.attach(args.state_dir).stop()
    extra = f" (killed {len(leftovers)} process groups left behind)" if leftovers else ""
    print(f"inferchaos: stopped the cluster in {args.state_dir}{extra}")
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    from faults.ledger import Ledger
    from faults.undo import run_step
    from inferchaos.errors import FaultError
    from targets.local.processes import pid_alive, start_time

    ledger = Ledger(args.ledger)
    if args.ledger.exists() and not os.access(args.ledger, os.R_OK):
        raise UsageError(f"cannot read the ledger {args.ledger}")
    entries = ledger.open_entries()
    if not entries:
        print(f"inferchaos: nothing to recover: every change in {args.ledger} is reverted")
        return 0
    failed = 0
    # Faults and load first, clusters last: a fault's undo may need its cluster running.
    for entry in sorted(entries, key=lambda e: (e.fault == "cluster", -e.wall)):
        if not args.force and entry.runner_pid != os.getpid() and pid_alive(entry.runner_pid) \
                and start_time(entry.runner_pid) == entry.runner_started:
            print(f"skipped {entry.fault} {entry.id}: its runner (pid {entry.runner_pid}) is still running "
                  "and will revert it; --force to undo anyway")
            continue
        try:
            for undo in reversed(entry.undo):
                print(f"{entry.fault} {entry.id}: {run_step(undo)}")
        except FaultError as exc:
            failed += 1
            ledger.reverted(entry, ok=False, detail=str(exc))
            print(f"{entry.fault} {entry.id}: FAILED: {exc}", file=sys.stderr)
            continue
        ledger.reverted(entry, detail="recovered")
        print(f"{entry.fault} {entry.id}: reverted")
    return 1 if failed else 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports import compare, load_summary, render, replot_missing, write_summary_html
    from reports.allure_site import render as render_allure

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
