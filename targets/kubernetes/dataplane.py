"""A pod asked directly, at the address its Service's EndpointSlice names: the data plane.

What the API says of a fault (a process in state T, a restart counted) is the mechanism; what
the clients feel is whether the pod answers. A request to the pod's own address, time-boxed,
tells a hung pod (it accepts, then says nothing) from one whose workers still serve; asking
its peers the same way tells "the pod is silent" from "the runner cannot reach pod IPs" (a
laptop behind a port-forward), where the effect cannot be read and the fault is not called
landed. Any HTTP answer counts, whatever its status: a server that says 404 is not hung.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

#: how long a pod may take to say anything before it counts as silent.
ASK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Reply:
    pod: str
    address: str
    answered: bool
    #: "HTTP 404 in 3 ms", "no answer in 2.0 s", "refused"...
    detail: str

    def __str__(self) -> str:
        return f"{self.pod} at {self.address}: {self.detail}"


def ask(pod: str, ip: str, port: int, timeout_s: float = ASK_TIMEOUT_S) -> Reply:
    host = f"[{ip}]" if ":" in ip else ip
    address = f"{host}:{port}"
    t0 = time.monotonic()
    try:
        # trust_env=False: a pod IP goes to the pod, never through an HTTP(S)_PROXY of the runner's
        with httpx.Client(timeout=timeout_s, trust_env=False) as http:
            status = http.get(f"http://{address}/").status_code
    except httpx.TimeoutException:
        return Reply(pod, address, False, f"no answer in {timeout_s:g} s")
    except httpx.ConnectError as exc:
        return Reply(pod, address, False, f"refused or unreachable ({exc})")
    except httpx.HTTPError as exc:
        return Reply(pod, address, False, f"no HTTP answer ({type(exc).__name__}: {exc})")
    return Reply(pod, address, True, f"HTTP {status} in {(time.monotonic() - t0) * 1000:.0f} ms")
