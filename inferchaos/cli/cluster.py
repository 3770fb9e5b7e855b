"""`up`, `status`, `down`: the embedded local cluster."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

from inferchaos.cli.inputs import add_verb, read_state_dir, state_dir_arg, stop_signals


def add(sub: argparse._SubParsersAction) -> None:
    """up, status, down."""
    up = add_verb(sub, "up", "start the embedded local cluster",
                 "Start the embedded local inference cluster: model store, feature store + pipeline, "
                 "dependency proxy, N reference replicas and HAProxy in front.",
                 "  inferchaos up                                  # foreground; Ctrl-C stops all\n"
                 "  inferchaos up --detach --state-dir /tmp/ic     # background, for a game day\n"
                 "  inferchaos up --detach --warm-pool 1 --prometheus\n"
                 "  inferchaos up --replica-cmd 'mlserver start . --http-port {port}'")
    up.add_argument("--replicas", type=int, default=3, metavar="N", help="replicas behind the LB (default: %(default)s)")
    up.add_argument("--warm-pool", type=int, default=0, metavar="N", help="pre-loaded standby replicas (default: %(default)s)")
    up.add_argument("--provisioning-delay", type=float, default=2.0, metavar="S",
                    help="seconds before a dead replica's replacement starts (default: %(default)g)")
    up.add_argument("--replica-cmd", metavar="CMD",
                    help="server command in place of ours; placeholders {port} (required) {name} {model} "
                         "{model_store} {feature_store} {device} {vgpu_dir}")
    up.add_argument("--ready-path", default="/v2/health/ready", metavar="PATH",
                    help="readiness path checked by LB and supervisor: what the server answers 200 on when "
                         "ready (default: %(default)s)")
    up.add_argument("--port", type=int, default=0, help="load balancer port (default: %(default)s, a free one)")
    up.add_argument("--oom", choices=["exit", "reject"], default="exit",
                    help="on device-memory exhaustion: exit, as vLLM does, or reject and stay up "
                         "(default: %(default)s)")
    up.add_argument("--startup-timeout", type=float, default=60.0, metavar="S",
                    help="seconds the replicas may take to be ready behind HAProxy before `up` gives up, naming "
                         "those that were not, and stops what it started (default: %(default)g)")
    up.add_argument("--server-arg", action="append", default=[], metavar="ARG",
                    help="extra option for the reference server, e.g. --server-arg=--batch-latency-ms=30")
    up.add_argument("--prometheus", action="store_true",
                    help="also run Prometheus scraping the replicas and HAProxy (needs the `prometheus` binary)")
    state_dir_arg(up)
    up.add_argument("--detach", action="store_true", help="start in the background and return")

    for verb, text, example in (
            ("status", "show the local cluster",
             "  inferchaos status --state-dir /tmp/ic\n  inferchaos status --json    # exit 0 only when ready"),
            ("down", "stop the local cluster", "  inferchaos down --state-dir /tmp/ic")):
        p = add_verb(sub, verb, text, text[0].upper() + text[1:] + ".", example)
        state_dir_arg(p)
        if verb == "status":
            p.add_argument("--json", action="store_true", help="machine-readable output")



def cmd_up(args: argparse.Namespace) -> int:
    from inferchaos.targets.local.cluster import LocalCluster
    from inferchaos.targets.local.spec import ClusterSpec

    spec = ClusterSpec(
        replicas=args.replicas, warm_pool=args.warm_pool, provisioning_delay_s=args.provisioning_delay,
        replica_cmd=args.replica_cmd, ready_path=args.ready_path, lb_port=args.port, oom=args.oom,
        startup_timeout_s=args.startup_timeout, server_args=tuple(args.server_arg), prometheus=args.prometheus,
    ).validate()
    read_state_dir(args.state_dir)
    say = lambda line: print(f"inferchaos: {line}", file=sys.stderr, flush=True)  # noqa: E731
    cluster = LocalCluster(spec, args.state_dir, owner_pid=None if args.detach else _own_pid())
    if args.detach:
        cluster.start(progress=say)
        _print_urls(cluster)
        print(f"stop it with: inferchaos down --state-dir {args.state_dir}")
        return 0
    stop = stop_signals()
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

    state = read_state_dir(args.state_dir)
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

    if read_state_dir(args.state_dir) is None:
        print(f"inferchaos: no local cluster in {args.state_dir}; nothing to stop")
        return 0
    cluster = LocalCluster.attach(args.state_dir)
    leftovers = cluster.stop()
    unproven = cluster.unproven()
    if unproven:  # alive, named by the state file, but not provably the cluster's: said, not signalled
        print(f"inferchaos: left alone in {args.state_dir}: process group(s) {', '.join(map(str, unproven))} "
              "do not carry this cluster's mark in this boot (a cluster started by an older inferchaos, or "
              "pgids reused): end them by hand if they are the cluster's", file=sys.stderr)
        return 1
    extra = f" (killed {len(leftovers)} process groups left behind)" if leftovers else ""
    print(f"inferchaos: stopped the cluster in {args.state_dir}{extra}")
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


VERBS = {"up": cmd_up, "status": cmd_status, "down": cmd_down}
