"""The request log: one JSON object per request, as the load generator saw it.

Written by the locustfile (one `.part` file per load process), read live by the
safeguard probe and the progress display through `RequestLogTail`, merged by the
runner into one JSONL file sorted by `start`, and read back with `read_log`.

Also here, because they decide what `ok` means and are worth testing without
locust: the checks of an inference answer's body and the task-mix parser.

Nothing here imports locust (it monkey-patches the importing process).
"""

from __future__ import annotations

import glob
import json
import math
import os
import socket
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable

from inferchaos.ground.errors import UsageError

KINDS = ("infer", "completion", "stream", "chat", "chat_stream")
#: the kinds whose answer comes as server-sent events, token by token.
STREAMING = frozenset({"stream", "chat_stream"})
REPLICA_HEADER = "x-inferchaos-replica"
FEATURE_VERSION_HEADER = "x-inferchaos-feature-version"
FEATURE_AGE_HEADER = "x-inferchaos-feature-age-s"
OUTPUT_DIM = 8
PART_SUFFIX = ".part"


# --------------------------------------------------------------------------- the record
@dataclass(frozen=True, slots=True)
class RequestRecord:
    #: time.monotonic() when the request was due: its scheduled send time under open-loop
    #: load, the send itself under closed loop (CLOCK_MONOTONIC: comparable across processes).
    start: float
    #: time.time() at start, for display only.
    wall: float
    #: from `start` until the full body was read (or the request failed): what the user felt,
    #: schedule lag included, so a client that fell behind cannot hide the wait.
    latency_s: float
    kind: str
    #: HTTP status, 0 when no response came.
    status: int
    #: True only for a 200 whose body is a valid inference answer.
    ok: bool
    error: str | None = None
    replica: str | None = None
    #: streaming only: time to the first data chunk.
    ttft_s: float | None = None
    feature_version: int | None = None
    feature_age_s: float | None = None
    #: hostname:pid of the load process.
    worker: str = ""
    #: infer only: the answer's top-class probability, whose distribution the drift probe compares.
    prediction: float | None = None
    #: seconds between the scheduled send time and the send (open loop; 0 under closed loop).
    lag_s: float = 0.0
    #: streams: tokens (text-bearing chunks) received, also when the stream was cut.
    tokens: int | None = None
    #: streams: gaps between successive tokens, ms (inter-token latency).
    itl_ms: tuple[float, ...] | None = None
    #: the answer never finished: a stream cut before its end, or a request still in flight
    #: when the load stopped (its latency is then a lower bound).
    incomplete: bool = False
    #: which of the workload's prompts or payloads was sent (stream integrity, golden answers).
    prompt: int | None = None
    #: sha1 of a completed answer's text (completions), for stream integrity.
    text_sha: str | None = None

    @property
    def end(self) -> float:
        return self.start + self.latency_s

    @property
    def tpot_ms(self) -> float | None:
        """Mean time per output token after the first (vLLM's benchmark and aiperf's TPOT)."""
        return sum(self.itl_ms) / len(self.itl_ms) if self.itl_ms else None

    def to_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in FIELDS}

    def to_json(self) -> str:
        # not dataclasses.asdict: it deep-copies, and this runs once per request
        return _ENCODER.encode({f: getattr(self, f) for f in FIELDS})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RequestRecord:
        try:
            return cls(
                start=float(d["start"]), wall=float(d["wall"]), latency_s=float(d["latency_s"]),
                kind=str(d["kind"]), status=int(d["status"]), ok=bool(d["ok"]),
                error=d.get("error"), replica=d.get("replica"),
                ttft_s=None if d.get("ttft_s") is None else float(d["ttft_s"]),
                feature_version=None if d.get("feature_version") is None else int(d["feature_version"]),
                feature_age_s=None if d.get("feature_age_s") is None else float(d["feature_age_s"]),
                worker=str(d.get("worker") or ""),
                prediction=None if d.get("prediction") is None else float(d["prediction"]),
                lag_s=float(d.get("lag_s") or 0.0),
                tokens=None if d.get("tokens") is None else int(d["tokens"]),
                itl_ms=None if d.get("itl_ms") is None else tuple(float(x) for x in d["itl_ms"]),
                incomplete=bool(d.get("incomplete", False)),
                prompt=None if d.get("prompt") is None else int(d["prompt"]),
                text_sha=d.get("text_sha"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a request record ({type(exc).__name__}: {exc}): {d!r:.200}") from None


FIELDS = tuple(f.name for f in fields(RequestRecord))
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def header_int(value: str | None) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def header_float(value: str | None) -> float | None:
    if value is None or value.strip() == "":
        return None
    try:
        f = float(value)
    except ValueError:
        return None
    return f if math.isfinite(f) else None


# --------------------------------------------------------------------------- what "ok" means
def check_infer_body(body: bytes | None, length: int | None = OUTPUT_DIM) -> str | None:
    """None when `body` is a valid answer of /v2/models/{m}/infer, else a short reason."""
    return parse_infer_body(body, length)[0]


def parse_infer_body(body: bytes | None, length: int | None = OUTPUT_DIM) -> tuple[str | None, float | None]:
    """(None, largest output value) for a valid infer answer, else (reason, None): one
    parse serves both the validity check and the drift probe's prediction. `length` is
    how many numbers outputs[0] must hold (the model's metadata says); None: any, but
    at least one. For a classifier's probabilities the largest is the top class's."""
    if not body:
        return "empty body", None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "truncated or invalid JSON", None
    try:
        data = doc["outputs"][0]["data"]
    except (KeyError, IndexError, TypeError):
        return "no outputs[0].data", None
    what = f"{length} numbers" if length else "a list of numbers"
    if not isinstance(data, list) or not data or (length is not None and len(data) != length):
        return f"outputs[0].data is not {what}", None
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in data):
        return f"outputs[0].data is not {what}", None
    top = max(data)
    return (None, float(top)) if math.isfinite(top) else ("outputs[0].data is not finite", None)


def check_completion_body(body: bytes | None, chat: bool = False) -> str | None:
    """None when `body` is a valid non-streaming /v1/completions answer, else a short reason."""
    return parse_completion_body(body, chat)[0]


def parse_completion_body(body: bytes | None, chat: bool = False) -> tuple[str | None, str | None]:
    """(None, text) for a valid /v1/completions (or, `chat`, /v1/chat/completions) answer,
    else (reason, None)."""
    if not body:
        return "empty body", None
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "truncated or invalid JSON", None
    where = "choices[0].message.content" if chat else "choices[0].text"
    try:
        choice = doc["choices"][0]
        text = choice["message"]["content"] if chat else choice["text"]
    except (KeyError, IndexError, TypeError):
        return f"no {where}", None
    if not isinstance(text, str) or not text:
        return "empty completion text", None
    return None, text


def chunk_text(payload: bytes) -> str | None:
    """The text one SSE data chunk of a completion (or chat completion) carries; None when
    it carries none (a role-only delta, a usage chunk, or not a completion chunk at all)."""
    try:
        doc = json.loads(payload)
        choice = doc["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    if not isinstance(choice, dict):
        return None
    text = choice.get("text")
    if text is None and isinstance(choice.get("delta"), dict):
        text = choice["delta"].get("content")
    return text if isinstance(text, str) and text else None


class SSEScanner:
    """Feed it the bytes of a text/event-stream as they come; it counts `data:` chunks,
    notes `data: [DONE]`, and an error event the server sent instead of tokens."""

    __slots__ = ("_buf", "chunks", "done", "error", "bad", "texts")

    def __init__(self) -> None:
        self._buf = b""
        self.chunks = 0          # data chunks other than [DONE]
        self.done = False        # saw data: [DONE]
        self.error: str | None = None  # a data chunk carrying {"error": ...}
        self.bad = False         # a data chunk after [DONE], or one that is not JSON
        self.texts: list[str] = []  # the text of each token-bearing chunk, in order

    @property
    def text(self) -> str:
        return "".join(self.texts)

    def feed(self, data: bytes) -> int:
        """Returns how many new token-bearing chunks this feed completed (a chunk that is
        not a completion chunk counts as one: a server of another shape still streams)."""
        self._buf += data
        new = 0
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                return new
            line, self._buf = self._buf[:i].rstrip(b"\r"), self._buf[i + 1:]
            if not line.startswith(b"data:"):
                continue  # blank separator, comment, event:/id: fields
            payload = line[5:].strip()
            if payload == b"[DONE]":
                self.done = True
                continue
            if self.done:
                self.bad = True
            self.chunks += 1
            text = chunk_text(payload)
            if text is not None:
                self.texts.append(text)
                new += 1
            elif b'"choices"' not in payload and b'"error"' not in payload:
                new += 1
            if b'"error"' in payload:
                try:
                    doc = json.loads(payload)
                except ValueError:
                    self.bad = True
                    continue
                if isinstance(doc, dict) and "error" in doc:
                    self.error = str(doc["error"])[:120]

    def verdict(self) -> str | None:
        """None when the stream was a complete, valid answer."""
        if self.error is not None:
            return f"stream error: {self.error}"
        if self.chunks == 0:
            return "empty body" if not self.done and not self._buf else "no data chunk"
        if not self.done:
            return "no [DONE]"
        if self.bad:
            return "data after [DONE]"
        return None


# --------------------------------------------------------------------------- task mix
def parse_mix(text: str) -> dict[str, int]:
    """'infer=8,completion=1,stream=1' -> {'infer': 8, 'completion': 1, 'stream': 1}."""
    mix: dict[str, int] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, weight = item.partition("=")
        name = name.strip()
        if not sep or name not in KINDS:
            raise UsageError(f"bad task mix item {item!r}: expected kind=weight with kind one of {', '.join(KINDS)}")
        try:
            w = int(weight)
        except ValueError:
            raise UsageError(f"bad task mix weight in {item!r}: must be a whole number") from None
        if w < 0:
            raise UsageError(f"bad task mix weight in {item!r}: must be 0 or more")
        if name in mix:
            raise UsageError(f"task mix names {name!r} twice")
        mix[name] = w
    if not any(mix.values()):
        raise UsageError(f"task mix {text!r} has no task with a weight above 0")
    return mix


# --------------------------------------------------------------------------- writing
def part_path(prefix: Path | str, pid: int | None = None) -> Path:
    return Path(f"{prefix}.{socket.gethostname()}-{pid or os.getpid()}{PART_SUFFIX}")


def part_paths(prefix: Path | str) -> list[Path]:
    """The part files written under `prefix` (by any host and pid), sorted by name."""
    return sorted(Path(p) for p in glob.glob(glob.escape(str(prefix)) + ".*" + PART_SUFFIX))


#: beside each part file: the requests of that process still out, rewritten every 0.2 s.
IN_FLIGHT_SUFFIX = ".inflight"


def in_flight_paths(prefix: Path | str) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(glob.escape(str(prefix)) + ".*" + IN_FLIGHT_SUFFIX))


def write_in_flight(prefix: Path | str, starts: Iterable[float], now: float) -> None:
    """What the safeguard needs to see a hang: a hung request leaves no record until it
    ends, so the start of every request still out is published, atomically replaced."""
    path = Path(f"{prefix}.{socket.gethostname()}-{os.getpid()}{IN_FLIGHT_SUFFIX}")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"t": now, "starts": sorted(round(s, 4) for s in starts)}))
    os.replace(tmp, path)


def read_in_flight(prefix: Path | str, stale_s: float = 2.0, now: float | None = None) -> list[float]:
    """The starts (monotonic) of requests still out, from every load process under
    `prefix` that published in the last `stale_s` (a stopped process's file says nothing)."""
    now = time.monotonic() if now is None else now
    starts: list[float] = []
    for p in in_flight_paths(prefix):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and now - float(data.get("t", 0)) <= stale_s:
            starts.extend(float(s) for s in data.get("starts", ()))
    return starts


class RecordWriter:
    """Appends records to this process's part file. The file is opened on the first
    write, and re-opened when the pid changed (locust forks after importing the
    locustfile). Buffered; flushed when a write comes 0.2 s after the last flush,
    and by `flush()` (the locustfile calls it every 0.2 s from a greenlet)."""

    def __init__(self, prefix: Path | str, flush_interval_s: float = 0.2) -> None:
        self.prefix = str(prefix)
        self.flush_interval_s = flush_interval_s
        self._fh = None
        self._pid = -1
        self._last_flush = 0.0
        self.path: Path | None = None

    def _open(self):
        pid = os.getpid()
        if self._fh is None or self._pid != pid:
            # after a fork the inherited handle belongs to the parent: drop it unflushed
            self.path = part_path(self.prefix, pid)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8", buffering=1 << 16)
            self._pid = pid
            self._last_flush = time.monotonic()
        return self._fh

    def write(self, record: RequestRecord) -> None:
        fh = self._open()
        fh.write(record.to_json() + "\n")
        now = time.monotonic()
        if now - self._last_flush >= self.flush_interval_s:
            fh.flush()
            self._last_flush = now

    def flush(self) -> None:
        if self._fh is not None and self._pid == os.getpid():
            self._fh.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._fh is not None and self._pid == os.getpid():
            self._fh.close()
        self._fh = None


# --------------------------------------------------------------------------- reading
def parse_lines(data: bytes, source: str = "") -> list[RequestRecord]:
    out = []
    for n, line in enumerate(data.split(b"\n"), 1):
        if line.strip():
            try:
                out.append(RequestRecord.from_dict(json.loads(line)))
            except ValueError as exc:
                raise ValueError(f"{source}:{n}: {exc}") from None
    return out


def read_log(path: Path | str) -> list[RequestRecord]:
    """All records of a JSONL request log, in file order. A truncated last line (a
    writer killed mid-line) is skipped; a bad line anywhere else is an error."""
    data = Path(path).read_bytes()
    if not data:
        return []
    complete, _, last = data.rpartition(b"\n")
    records = parse_lines(complete, str(path))
    if last.strip():
        try:
            records.append(RequestRecord.from_dict(json.loads(last)))
        except ValueError:
            pass  # truncated
    return records


def read_parts(prefix: Path | str) -> list[RequestRecord]:
    """All complete records of all part files under `prefix`, sorted by start."""
    records: list[RequestRecord] = []
    for p in part_paths(prefix):
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            continue
        complete = data[: data.rfind(b"\n") + 1]
        records.extend(parse_lines(complete, str(p)))
    records.sort(key=lambda r: r.start)
    return records


def write_log(path: Path | str, records: Iterable[RequestRecord]) -> None:
    """Write records as JSONL atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(r.to_json() + "\n")
    os.replace(tmp, path)


class RequestLogTail:
    """Returns the records appended to the part files under `prefix` since the last
    call, from all load processes (new part files are picked up as they appear). A
    partial last line is kept until its newline arrives. Not thread-safe; one reader."""

    def __init__(self, prefix: Path | str) -> None:
        self.prefix = str(prefix)
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, bytes] = {}

    def __call__(self) -> list[RequestRecord]:
        return self.read_new()

    def read_new(self) -> list[RequestRecord]:
        records: list[RequestRecord] = []
        for p in part_paths(self.prefix):
            try:
                with open(p, "rb") as fh:
                    fh.seek(self._offsets.get(p, 0))
                    data = fh.read()
            except FileNotFoundError:
                continue  # merged and removed meanwhile
            if not data:
                continue
            self._offsets[p] = self._offsets.get(p, 0) + len(data)
            data = self._partial.pop(p, b"") + data
            cut = data.rfind(b"\n") + 1
            if cut < len(data):
                self._partial[p] = data[cut:]
            records.extend(parse_lines(data[:cut], str(p)))
        records.sort(key=lambda r: r.start)
        return records

    def in_flight(self) -> list[float]:
        """Starts of the requests sent (or due) and not yet answered, as last published."""
        return read_in_flight(self.prefix)
