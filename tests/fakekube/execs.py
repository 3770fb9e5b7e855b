"""`kubectl exec` against the fake: the websocket the real client's `stream()` opens.

The server speaks the v4 channel protocol (a leading byte: 1 stdout, 2 stderr, 3 the
status) and records what was asked to run. What answers is the FakeKube's `exec_handler`,
which returns one of:

- `(stdout, stderr, exit code)`: a canned answer (the default, and a test's own handler:
  with no kubelet, exec is the boundary a test stops at and nothing runs);
- `Run(argv)`: run that argv on this machine for real and stream what it prints as it
  prints it (the fake kubelet answers `nsenter ... -- <the command>`, so the command runs
  inside the pod's container namespaces with the kernel's semantics);
- or it raises `ExecRefused`: answered as an HTTP error instead of the upgrade, as the
  kubelet does for a container that is not running (the client sees a failed handshake).

The handler runs in a worker thread, never on the server's event loop, so a slow one does
not stall the API (watches, other requests) meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from dataclasses import dataclass
from typing import Callable, Union

from aiohttp import web

from tests.fakekube.shapes import status_response


@dataclass(frozen=True)
class Exec:
    namespace: str
    pod: str
    container: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    """Run `argv` here for real. After `timeout_s` the stream closes with no status, as when the
    client gives up; the command runs on (in its container, which ends it at the latest)."""

    argv: tuple[str, ...]
    timeout_s: float = 30.0


class ExecRefused(Exception):
    """No stream opens: the answer is this HTTP status and message (a Status body)."""

    def __init__(self, code: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.reason = code, message, reason


#: an exec -> (stdout, stderr, exit code), or a command to run for real
ExecAnswer = Union[tuple[str, str, int], Run]
ExecHandler = Callable[[Exec], ExecAnswer]


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


def exit_code(returncode: int) -> int:
    """As a container runtime reports it: a death by signal N is 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


async def serve_exec(request: web.Request, e: Exec, handler: ExecHandler) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    try:
        answer = await loop.run_in_executor(None, handler, e)
    except ExecRefused as refused:
        return status_response(refused.code, refused.reason, refused.message)
    ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io", "channel.k8s.io"))
    await ws.prepare(request)
    code: int | None
    if isinstance(answer, Run):
        code = await _run(answer, ws)
    else:
        out, err, code = answer
        if out:
            await ws.send_bytes(b"\x01" + out.encode())
        if err:
            await ws.send_bytes(b"\x02" + err.encode())
    if code is not None:
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(b"\x03" + json.dumps(status(code)).encode())
    await ws.close()
    return ws


async def _run(run: Run, ws: web.WebSocketResponse) -> int | None:
    """Stream stdout and stderr as they come; the exit code once the command has exited and
    both streams are drained. A backgrounded child still holding them keeps the exec open, as
    a real runtime's does (containerd waits for the streams): redirect its output. None when
    `timeout_s` ran out first."""
    try:
        proc = await asyncio.create_subprocess_exec(*run.argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                                                    start_new_session=True)
    except OSError as exc:
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(b"\x02" + f"exec {run.argv[0]}: {exc}\n".encode())
        return 126

    async def pump(stream: asyncio.StreamReader | None, channel: bytes) -> None:
        assert stream is not None
        while chunk := await stream.read(65536):
            with contextlib.suppress(ConnectionError):
                await ws.send_bytes(channel + chunk)

    try:
        await asyncio.wait_for(asyncio.gather(pump(proc.stdout, b"\x01"), pump(proc.stderr, b"\x02"), proc.wait()),
                               run.timeout_s)
    except asyncio.TimeoutError:
        return None
    return exit_code(proc.returncode if proc.returncode is not None else -signal.SIGKILL)
