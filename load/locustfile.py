"""Inference users for locust: closed-loop clients of the KServe v2 and OpenAI APIs.

Run by `load.runner.LoadRunner` as `python -m locust -f load/locustfile.py ...` in its own
process; never import this module elsewhere (importing locust monkey-patches the process).

Environment:
  INFERCHAOS_MIX          task weights, default "infer=8,completion=1,stream=1"
  INFERCHAOS_MODEL        model name, default "mlp"
  INFERCHAOS_MAX_TOKENS   max_tokens of completions, default 8
  INFERCHAOS_WAIT_S       wait between a user's requests, default 0 (closed loop)
  INFERCHAOS_TIMEOUT_S    connect and read timeout, default 30
  INFERCHAOS_REQUEST_LOG  path prefix of the request log; each process appends to
                          <prefix>.<hostname>-<pid>.part. Unset: no request log.

Each request becomes one `RequestRecord`; `ok` judges the body, not just the status.
Locust's own request events still fire (failures marked), so its stats stay right.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, constant, events, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load.records import (  # noqa: E402
    FEATURE_AGE_HEADER,
    FEATURE_VERSION_HEADER,
    REPLICA_HEADER,
    RecordWriter,
    RequestRecord,
    SSEScanner,
    check_completion_body,
    header_float,
    header_int,
    parse_infer_body,
    parse_mix,
    worker_id,
)

MIX = parse_mix(os.environ.get("INFERCHAOS_MIX", "infer=8,completion=1,stream=1"))
MODEL = os.environ.get("INFERCHAOS_MODEL", "mlp")
MAX_TOKENS = int(os.environ.get("INFERCHAOS_MAX_TOKENS", "8"))
WAIT_S = float(os.environ.get("INFERCHAOS_WAIT_S", "0"))
TIMEOUT_S = float(os.environ.get("INFERCHAOS_TIMEOUT_S", "30"))
LOG_PREFIX = os.environ.get("INFERCHAOS_REQUEST_LOG") or None
#: the runner that started this load ("pid:start time"): when it is gone, so is the load.
OWNER = os.environ.get("INFERCHAOS_OWNER", "")

INFER_PATH = f"/v2/models/{MODEL}/infer"
COMPLETIONS_PATH = "/v1/completions"
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
SSE_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}
PROMPTS = ("the quick brown fox", "tell me about spot instances", "alpha bravo charlie",
           "why is the batch late", "hello")

_writer: RecordWriter | None = RecordWriter(LOG_PREFIX) if LOG_PREFIX else None
_flusher: gevent.Greenlet | None = None
_worker: tuple[int, str] | None = None


def _worker_name() -> str:
    global _worker
    pid = os.getpid()
    if _worker is None or _worker[0] != pid:
        _worker = (pid, worker_id())
    return _worker[1]


def _flush_forever() -> None:
    while True:
        gevent.sleep(0.2)
        if _writer is not None:
            _writer.flush()


def _emit(record: RequestRecord) -> None:
    global _flusher
    if _writer is None:
        return
    _writer.write(record)
    if _flusher is None or _flusher.dead:
        _flusher = gevent.spawn(_flush_forever)


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def _watch_owner(environment) -> None:
    """A dead man's switch: a runner SIGKILLed without `inferchaos recover` must not leave
    load hammering the endpoint for ever. Its pid and start time name it exactly."""
    pid_text, _, started = OWNER.partition(":")
    pid = int(pid_text)
    while True:
        gevent.sleep(1.0)
        if _start_time(pid) != started:
            print(f"inferchaos: the runner (pid {pid}) is gone: stopping the load", flush=True)
            if environment.runner is not None:
                environment.runner.quit()
            return


@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    if OWNER.partition(":")[0].isdigit():
        gevent.spawn(_watch_owner, environment)


@events.quitting.add_listener
def _on_quitting(**_kw) -> None:
    if _writer is not None:
        _writer.flush()


@events.quit.add_listener
def _on_quit(**_kw) -> None:
    if _writer is not None:
        _writer.close()


def _infer_payload() -> bytes:
    data = [round(random.uniform(-1.0, 1.0), 4) for _ in range(16)]
    return json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": data}]}).encode()


def _completion_payload(stream: bool) -> bytes:
    return json.dumps({"model": MODEL, "prompt": random.choice(PROMPTS), "max_tokens": MAX_TOKENS,
                       "stream": stream}).encode()


def _exc_name(exc: BaseException) -> str:
    name = type(exc).__name__
    code = getattr(exc, "code", None)
    if name == "BadStatusCode" or (code is not None and isinstance(code, int) and name.endswith("StatusCode")):
        return f"HTTP {code}"
    return name


def _header(resp, name: str) -> str | None:
    headers = getattr(resp, "headers", None)
    if not headers:
        return None
    try:
        return headers.get(name)
    except Exception:  # noqa: BLE001 - a broken header block must not kill the user
        return None


class InferenceUser(FastHttpUser):
    """One closed-loop client; the mix of tasks comes from INFERCHAOS_MIX."""

    wait_time = constant(WAIT_S)
    network_timeout = TIMEOUT_S
    connection_timeout = TIMEOUT_S
    max_retries = 0

    def _record(self, kind: str, t0: float, wall: float, latency_s: float, resp, error: str | None,
                ttft_s: float | None = None, prediction: float | None = None) -> None:
        status = int(getattr(resp, "status_code", 0) or 0)
        if error is None and status != 200:
            error = f"HTTP {status}" if status else "no response"
        ok = error is None
        _emit(RequestRecord(
            start=t0, wall=wall, latency_s=latency_s, kind=kind, status=status, ok=ok, error=error,
            replica=_header(resp, REPLICA_HEADER), ttft_s=ttft_s,
            feature_version=header_int(_header(resp, FEATURE_VERSION_HEADER)),
            feature_age_s=header_float(_header(resp, FEATURE_AGE_HEADER)),
            worker=_worker_name(), prediction=prediction if ok else None,
        ))

    def _unary(self, kind: str, path: str, payload: bytes, check) -> None:
        """`check(body)` -> (error or None, prediction or None)."""
        wall, t0 = time.time(), time.monotonic()
        prediction = None
        with self.client.post(path, data=payload, headers=JSON_HEADERS, name=kind, catch_response=True) as resp:
            exc = resp.request_meta.get("exception")
            status = int(resp.status_code or 0)
            if exc is not None and status == 200:
                error = f"truncated body ({_exc_name(exc)})"  # headers came, the body did not
            elif status != 200:
                error = f"HTTP {status}" if status else _exc_name(exc) if exc is not None else "no response"
            else:
                try:
                    body = resp.content
                except Exception as e:  # noqa: BLE001
                    body, error = None, f"truncated body ({_exc_name(e)})"
                else:
                    error, prediction = check(body)
            latency = time.monotonic() - t0
            if error is None:
                resp.success()
            else:
                resp.failure(error)
            self._record(kind, t0, wall, latency, resp, error, prediction=prediction)

    @task(MIX.get("infer", 0))
    def infer(self) -> None:
        self._unary("infer", INFER_PATH, _infer_payload(), parse_infer_body)

    @task(MIX.get("completion", 0))
    def completion(self) -> None:
        self._unary("completion", COMPLETIONS_PATH, _completion_payload(False),
                    lambda body: (check_completion_body(body), None))

    @task(MIX.get("stream", 0))
    def stream(self) -> None:
        wall, t0 = time.time(), time.monotonic()
        ttft: float | None = None
        nbytes = 0
        with self.client.post(COMPLETIONS_PATH, data=_completion_payload(True), headers=SSE_HEADERS,
                              name="stream", stream=True, catch_response=True) as resp:
            exc = resp.request_meta.get("exception")
            status = int(resp.status_code or 0)
            error: str | None = None
            if status != 200:
                error = f"HTTP {status}" if status else _exc_name(exc) if exc is not None else "no response"
            elif exc is not None:
                error = _exc_name(exc)
            else:
                sse = SSEScanner()
                try:
                    # Not resp.iter_content(n): geventhttpclient's read(n) waits for n bytes, so
                    # the first token would only show when n bytes (or the end) came. readline
                    # returns each SSE line as soon as it is in; b"" at the end of the body.
                    raw = resp._response
                    while line := raw.readline(b"\n"):
                        nbytes += len(line)
                        if sse.feed(line) and ttft is None:
                            ttft = time.monotonic() - t0
                except Exception as e:  # noqa: BLE001 - timeouts and resets end the stream
                    error = f"{'no [DONE]' if sse.chunks else 'empty body'} ({_exc_name(e)})"
                if error is None:
                    error = sse.verdict()
            latency = time.monotonic() - t0
            # locust times a stream=True request only until its headers: count the body too
            resp.request_meta["response_time"] = latency * 1000.0
            resp.request_meta["response_length"] = nbytes
            if error is None:
                resp.success()
            else:
                resp.failure(error)
            self._record("stream", t0, wall, latency, resp, error, ttft_s=ttft)

