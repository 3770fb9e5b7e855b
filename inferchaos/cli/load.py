"""`inferchaos load`: open-loop load for a game day, so `watch` has something to show.

The same load an experiment sends (the workload learnt from the server, open-loop arrivals,
every request in a log), started by hand and stopped cleanly: Ctrl-C, SIGTERM or the end
of `--for`. It is journalled like any change, so a SIGKILLed `load` leaves nothing that
`inferchaos recover` cannot end. `--web` also serves locust's own UI, on loopback by default.

locust's UI starts, stops and resizes the load on a plain form POST, so it serves loopback
only, unless `--web-login` puts locust's login page in front of it (user `inferchaos`, the
password from INFERCHAOS_WEB_PASSWORD, or one made up and printed here). A non-loopback
`--web` without `--web-login` is refused. Whatever the UI's form says, the load goes to URL.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from inferchaos import load_options
from inferchaos.cli.inputs import (add_verb, duration, ledger_arg, ledger_file, running_cluster, state_dir_arg,
                                   stop_signals)
from inferchaos.ground.errors import TargetError, UsageError

DEFAULT_RATE = 20.0
WEB = "127.0.0.1:8089"


def add(sub: argparse._SubParsersAction) -> None:
    """load."""
    p = add_verb(sub, "load", "send open-loop load for a game day",
                 "Send open-loop load (--load-rate requests/s, whatever the answers do) to URL, or to the "
                 "load balancer of the local cluster in --state-dir, until Ctrl-C or --for. The workload is "
                 "learnt from the server as an experiment's is (--api, --model, --payload, --header); every "
                 "request goes to the request log; a line every 2 s says req/s, errors and p99. Journalled "
                 "in the ledger: `inferchaos recover` ends it if this process is killed.",
                 "  inferchaos load --state-dir /tmp/gd --load-rate 50\n"
                 "  inferchaos load http://vllm.ml.svc:8000 --load-rate 5 --for 10m --model llama\n"
                 "  inferchaos load --state-dir /tmp/gd --web          # locust's UI on 127.0.0.1:8089 too\n"
                 "  inferchaos load --state-dir /tmp/gd --web 0.0.0.0:8089 --web-login   # off loopback: a login page")
    p.add_argument("url", nargs="?", metavar="URL", help="the endpoint (default: the local cluster's LB)")
    p.add_argument("--for", dest="for_s", type=duration, metavar="DURATION",
                   help="stop after DURATION (90, 90s, 5m, 1h; default: until Ctrl-C)")
    p.add_argument("--web", nargs="?", const=WEB, metavar="HOST:PORT",
                   help=f"also serve locust's web UI (default {WEB}: loopback only; any other address "
                        f"needs --web-login)")
    p.add_argument("--web-login", action="store_true",
                   help="put locust's login page in front of the web UI: user inferchaos, password from "
                        "$INFERCHAOS_WEB_PASSWORD (at least 12 characters), else one made up and printed here")
    p.add_argument("--log", type=Path, metavar="FILE",
                   help="the request log (default: .inferchaos/load/requests-<UTC time>.jsonl)")
    state_dir_arg(p)
    ledger_arg(p)
    load_options.add_options(p.add_argument_group("the load and the server"), leave_out=tuple(REFUSED), changes={
        "--load-rate": {"default": DEFAULT_RATE,
                        "help": "R requests/s scheduled whatever the answers do (default: %(default)g)"},
        "--load-workers": {"default": "1", "help": "load processes: above 1, locust runs a master and N worker "
                                                   "processes that send it their records over locust's messaging "
                                                   "(default: %(default)s, one locust process)"}})
    for name, why in REFUSED.items():  # not offered (no --help line), but named with the reason if given
        p.add_argument(name, action=_Refused, why=why)


#: options of the experiments' load that `load` does not take: it is open loop only, and a
#: local cluster's replicas are `inferchaos up`'s business.
REFUSED = {
    "--load-users": "inferchaos load is open loop: give --load-rate R, not --load-users",
    "--replica-cmd": "--replica-cmd and --ready-path are the local cluster's (`inferchaos up`), not the load's",
    "--ready-path": "--replica-cmd and --ready-path are the local cluster's (`inferchaos up`), not the load's",
}


class _Refused(argparse.Action):
    """An option this verb refuses: hidden from --help, and a usage error naming why when given."""

    def __init__(self, option_strings: list[str], dest: str, why: str, **kwargs: object) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs="?", default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
        self.why = why

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        raise argparse.ArgumentError(self, self.why)


def cmd_load(args: argparse.Namespace) -> int:
    from inferchaos.faults.undo import step
    from inferchaos.load.runner import WEB_PASSWORD_ENV, WEB_USER, LoadProfile, LoadRunner
    from inferchaos.load.workload import resolve

    # the options `load` does not offer (REFUSED) are absent: None, as for pytest when not given
    opts = load_options.settings(lambda name: getattr(args, name.lstrip("-").replace("-", "_"), None))
    if args.web_login and not args.web:
        raise UsageError("--web-login goes with --web HOST:PORT (the UI it protects)")
    web = _web(args.web, args.web_login) if args.web else None
    password = os.environ.get(WEB_PASSWORD_ENV) or None if args.web_login else None
    if password is not None and len(password) < 12:
        raise UsageError(f"--web-login: {WEB_PASSWORD_ENV} is shorter than 12 characters")
    url = args.url or running_cluster(args.state_dir).lb_url
    ledger = ledger_file(args.ledger, write=True)
    workload = resolve(url, opts.api, opts.model, opts.payload, opts.headers)
    profile = LoadProfile(rate=opts.rate or DEFAULT_RATE, arrival=opts.arrival, max_in_flight=opts.max_in_flight,
                          workload=workload, processes=opts.workers or 1)
    log = args.log or Path(".inferchaos/load") / time.strftime("requests-%Y%m%dT%H%M%SZ.jsonl", time.gmtime())
    load = LoadRunner(url, log, profile, web=web, web_login=args.web_login, web_password=password)
    stop = stop_signals()
    entry = ledger.applied("load", [step("end_marked", mark=load.mark, what="locust")], {"kind": "process"},
                           detail=f"inferchaos load {url}")
    try:
        load.start()
        say(f"load: {profile.describe()} to {url}; {workload.describe()}")
        if web:
            login = ""
            if load.web_login:
                secret = f"${WEB_PASSWORD_ENV}" if password else load.web_password
                login = f" (login: user {WEB_USER}, password {secret})"
            say(f"locust's web UI: http://{web}{login}")
        say(f"request log: {load.log_path}; Ctrl-C stops it" + (f" (or in {args.for_s:g} s)" if args.for_s else ""))
        _report(load, stop, None if args.for_s is None else time.monotonic() + args.for_s)
    finally:
        records = load.stop()
        ledger.reverted(entry, detail="load stopped")
    ok = sum(r.ok for r in records)
    say(f"stopped: {len(records)} requests, {ok} answered ({len(records) - ok} failed or cut); log {load.log_path}")
    if load.exit_code not in (0, None) and not records:
        raise TargetError(f"locust exited {load.exit_code}: see {load.locust_log}")
    return 0


def _report(load, stop, deadline: float | None) -> None:  # type: ignore[no-untyped-def]
    """A line every 2 s from the records that came in: what the load sees, as it sees it."""
    tail, window, last = load.tail(), [], time.monotonic()
    while not stop() and load.running() and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.2)
        window.extend(tail())
        now = time.monotonic()
        if now - last >= 2.0:
            took = sorted(r.latency_s for r in window)
            p99 = f"{took[min(len(took) - 1, int(len(took) * 0.99))] * 1000:.0f} ms" if took else "-"
            bad = sum(not r.ok for r in window)
            say(f"{len(window) / (now - last):.1f} req/s, {bad} failed, p99 {p99}")
            window, last = [], now
    if not load.running() and not stop():
        say(f"locust stopped by itself (exit {load._proc.poll() if load._proc else '?'}): see {load.locust_log}")


def _web(text: str, login: bool) -> str:
    from inferchaos.load.runner import check_web

    check_web(text, login)
    return text


def say(line: str) -> None:
    print(f"inferchaos: {line}", file=sys.stderr, flush=True)


VERBS = {"load": cmd_load}
