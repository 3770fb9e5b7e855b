"""The process the fake kubelet runs "in the container" when a pod's container names no command
(the image's entrypoint, as it were): a tiny HTTP server with a readiness endpoint.

    python tests/fakekube/container_server.py --host 127.100.0.2 --port 8080 [--fork-worker]

GET /ready answers 200 "ok" (the kubelet's readiness probe); anything else 404. It writes
nothing else, to stdout or elsewhere. It installs a SIGTERM handler, so as its container's PID 1
it does react to the kubelet's SIGTERM (the kernel drops signals to a namespace's init only
when it has no handler): it stops accepting, drains for a moment and exits 0, as a well-behaved
server does. SIGSTOP and SIGKILL it cannot handle: what they do is up to the kernel.

Stdlib only, and runnable by path: it must not import the test suite.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

#: how long a terminating server keeps the process up after it stops accepting.
DRAIN_S = 0.1


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.path == "/ready":
            body = b"ok"
            self.send_response(200)
        else:
            body = b"not found"
            self.send_response(404)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Silent: the container writes nothing but its answers."""


def serve(server: ThreadingHTTPServer) -> int:
    def terminate(signum: int, frame: FrameType | None) -> None:
        # shutdown() blocks until serve_forever returns, which runs in this very thread: ask from another
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, terminate)
    server.serve_forever(poll_interval=0.05)
    time.sleep(DRAIN_S)
    server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--fork-worker", action="store_true",
                        help="bind, then serve from a forked child while this process only waits for it "
                             "(a gunicorn or uvicorn master's shape: stopping the master stops no answer)")
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    if not args.fork_worker:
        return serve(server)
    child = os.fork()
    if child == 0:
        os._exit(serve(server))
    server.server_close()
    signal.signal(signal.SIGTERM, lambda signum, frame: os.kill(child, signal.SIGTERM))
    _, status = os.waitpid(child, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    raise SystemExit(main())
