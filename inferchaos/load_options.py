"""The options that say what load to send and to which server: declared once, for pytest
and the CLI, and checked when the session starts (one line, exit code 2).

`--load-rate R`, `--load-users N` and `--load-workers N` are shorthands for the SLO file's
phase keys (`rate`, `rate = 0` with `users` for closed loop, `processes`), so the file,
`--slo-set` and these options never disagree about what ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from inferchaos.ground.errors import UsageError
from inferchaos.load.runner import ARRIVALS
from inferchaos.load.workload import APIS, parse_headers, read_payloads

OPTIONS: tuple[tuple[str, dict], ...] = (
    ("--load-rate", {"metavar": "R", "help": "open-loop load: R requests/s scheduled whatever the answers do "
                                             "(default: the SLO file's phase key `rate`)"}),
    ("--load-users", {"metavar": "N", "help": "closed-loop load instead: N users, each waiting for its answer"}),
    ("--load-arrival", {"metavar": "KIND", "default": "poisson",
                        "help": "open-loop gaps: poisson or constant (default: %(default)s)"}),
    ("--load-workers", {"metavar": "N", "help": "load processes: above 1, locust runs a master and N worker "
                                                "processes that send it their records over locust's messaging "
                                                "(default: the SLO file's phase key `processes`)"}),
    ("--load-max-in-flight", {"metavar": "N", "default": "1024",
                              "help": "open loop: requests in flight at most per load process (default: %(default)s)"}),
    ("--api", {"metavar": "API", "default": "auto", "help": "what the server speaks: oip, openai, openai-chat, "
                                                             "or auto to ask the server (default: %(default)s)"}),
    ("--model", {"metavar": "NAME", "help": "the model to load (default: the one the server lists)"}),
    ("--payload", {"metavar": "FILE", "help": "request bodies, one JSON object a line (default: built from the "
                                              "server's metadata)"}),
    ("--header", {"metavar": "NAME=ENV_VAR", "action": "append", "default": [],
                  "help": "a request header whose value is read from ENV_VAR (repeatable; never logged)"}),
    ("--replica-cmd", {"metavar": "CMD", "help": "local target: run this server as every replica ({port} "
                                                 "templated), e.g. 'mlserver start . --http-port {port}'"}),
    ("--ready-path", {"metavar": "PATH", "help": "local target: readiness path checked by LB and supervisor "
                                                 "(default: the one `inferchaos up --help` shows)"}),
)


@dataclass(frozen=True)
class LoadOptions:
    rate: float | None = None
    users: int | None = None
    workers: int | None = None
    arrival: str = "poisson"
    max_in_flight: int = 1024
    api: str = "auto"
    model: str | None = None
    payload: Path | None = None
    headers: tuple[tuple[str, str], ...] = ()
    replica_cmd: str | None = None
    ready_path: str | None = None

    def slo_overrides(self) -> list[str]:
        """What the options mean as `--slo-set` entries (they win over the SLO file)."""
        out = [f"processes={self.workers}"] if self.workers is not None else []
        if self.users is not None:
            return ["rate=0", f"users={self.users}"] + out
        if self.rate is not None:
            return [f"rate={self.rate!r}"] + out
        return out


def add_options(group: Any, leave_out: tuple[str, ...] = (), changes: dict[str, dict] | None = None) -> None:
    """Into a pytest option group (`addoption`) or an argparse parser (`add_argument`). A verb
    offers only what it accepts: `leave_out` names the options it does not take, `changes`
    replaces keyword arguments of one (a default of its own, and the help that states it)."""
    add = getattr(group, "addoption", None) or group.add_argument
    unknown = (set(leave_out) | set(changes or {})) - {name for name, _ in OPTIONS}
    if unknown:
        raise ValueError(f"no such load option: {', '.join(sorted(unknown))}")
    for name, kwargs in OPTIONS:
        if name not in leave_out:
            add(name, **{**kwargs, **(changes or {}).get(name, {})})


def settings(get: Callable[[str], Any]) -> LoadOptions:
    rate = get("--load-rate")
    users = get("--load-users")
    if rate is not None and users is not None:
        raise UsageError("--load-rate and --load-users: give one (open loop at a rate, or closed loop with users)")
    if rate is not None:
        try:
            rate = float(rate)
        except ValueError:
            raise UsageError(f"--load-rate {rate!r}: expected a number of requests/s above 0") from None
        if not (math.isfinite(rate) and rate > 0):
            raise UsageError(f"--load-rate {rate:g}: expected a number of requests/s above 0")
    if users is not None:
        if not str(users).isdigit() or int(users) < 1:
            raise UsageError(f"--load-users {users!r}: expected a whole number of at least 1")
        users = int(users)
    workers = get("--load-workers")
    if workers is not None:
        if not str(workers).isdigit() or int(workers) < 1:
            raise UsageError(f"--load-workers {workers!r}: expected a whole number of at least 1")
        workers = int(workers)
    arrival = get("--load-arrival")
    if arrival not in ARRIVALS:
        raise UsageError(f"--load-arrival {arrival!r}: expected one of {', '.join(ARRIVALS)}")
    cap = get("--load-max-in-flight")
    if not str(cap).isdigit() or int(cap) < 1:
        raise UsageError(f"--load-max-in-flight {cap!r}: expected a whole number of at least 1")
    api = get("--api")
    if api not in APIS:
        raise UsageError(f"--api {api!r}: expected one of {', '.join(APIS)}")
    model = get("--model")
    if model is not None and not model.strip():
        raise UsageError("--model: expected a model name, got an empty one")
    payload = get("--payload")
    if payload is not None:
        read_payloads(Path(payload))  # unreadable or not JSON: say so now, not mid-run
    ready = get("--ready-path")
    if ready is not None and not ready.startswith("/"):
        raise UsageError(f"--ready-path {ready!r}: expected a path starting with /")
    return LoadOptions(rate=rate, users=users, workers=workers, arrival=arrival, max_in_flight=int(cap), api=api, model=model,
                       payload=Path(payload) if payload is not None else None,
                       headers=parse_headers(get("--header")), replica_cmd=get("--replica-cmd"),
                       ready_path=ready)
