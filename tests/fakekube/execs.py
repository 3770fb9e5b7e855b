"""`kubectl exec` against the fake: the websocket the real client's `stream()` opens.

The server speaks the v4 channel protocol (a leading byte: 1 stdout, 2 stderr, 3 the
status), records what was asked to run, and answers with what a test's handler says the
command printed and how it exited. Nothing runs: exec is the boundary tests stop at.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from aiohttp import web


@dataclass(frozen=True)
class Exec:
    namespace: str
    pod: str
    container: str
    argv: tuple[str, ...]


#: exec -> (stdout, stderr, exit code)
ExecHandler = Callable[[Exec], tuple[str, str, int]]


def default_handler(e: Exec) -> tuple[str, str, int]:
    """Success, silently; a backgrounded command (`... & echo $!`) prints a pid."""
    if e.argv[:2] == ("sh", "-c") and "echo $!" in e.argv[2]:
        return "4242\n", "", 0
    return "", "", 0


def status(code: int) -> dict:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: error executing command, exit status {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


async def serve_exec(request: web.Request, e: Exec, handler: ExecHandler) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io", "channel.k8s.io"))
    await ws.prepare(request)
    out, err, code = handler(e)
    if out:
        await ws.send_bytes(b"\x01" + out.encode())
    if err:
        await ws.send_bytes(b"\x02" + err.encode())
    await ws.send_bytes(b"\x03" + json.dumps(status(code)).encode())
    await ws.close()
    return ws
