"""What the load sends: the API, the model and the request bodies, learnt from the server.

A chaos verdict against a server that answers every request with 404 measures nothing, so
the workload is resolved once, before anything is injected, from the server's own
metadata: OIP `GET /v2/models/{name}` gives the inputs' names, datatypes and shapes;
OpenAI `GET /v1/models` gives the model ids. Or the bodies come from a file of the user's
(`--payload FILE.jsonl`, one JSON body a line). Auth headers name an environment variable
whose value is read where the request is sent, so it never reaches a command line or a log.

The resolved `Workload` travels to the locust process as JSON in one environment variable;
`body()` is what the locustfile calls per request. Nothing here imports locust.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import httpx

from inferchaos.ground.errors import UsageError
from inferchaos.load.records import STREAMING, parse_mix

APIS = ("oip", "openai", "openai-chat", "auto")
WORKLOAD_ENV = "INFERCHAOS_WORKLOAD"
#: a load worker's own list of the headers it may send, `NAME=ENV_VAR,NAME=ENV_VAR`: set where
#: the worker runs (its pod's env, beside the Secret that holds ENV_VAR), never taken from the
#: master. Of the headers a master's workload names, a worker sends only the pairs listed here.
HEADERS_ENV = "INFERCHAOS_HEADERS"
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
#: the kinds each API speaks, and the mix it gets unless told otherwise.
API_KINDS: dict[str, tuple[str, ...]] = {
    "oip": ("infer",),
    "openai": ("completion", "stream"),
    "openai-chat": ("chat", "chat_stream"),
    "mixed": ("infer", "completion", "stream"),
}
DEFAULT_MIX: dict[str, str] = {
    "oip": "infer=1",
    "openai": "completion=1,stream=1",
    "openai-chat": "chat=1,chat_stream=1",
    # a server that speaks both (the reference server): mostly tensors, some text
    "mixed": "infer=8,completion=1,stream=1",
}
PROMPTS = ("the quick brown fox", "tell me about spot instances", "alpha bravo charlie",
           "why is the batch late", "hello")
OIP_DATATYPES = ("BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                 "FP16", "FP32", "FP64", "BYTES")
MAX_PAYLOADS = 10_000


@dataclass(frozen=True)
class InputSpec:
    """One OIP input as the model's metadata declares it."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def concrete_shape(self) -> list[int]:
        """A batch of one: every variable dimension (-1) becomes 1."""
        return [d if d > 0 else 1 for d in self.shape]

    def tensor(self, rng: random.Random) -> dict[str, Any]:
        shape = self.concrete_shape
        n = math.prod(shape)
        if self.datatype.startswith("FP"):
            data: list[Any] = [round(rng.uniform(-1.0, 1.0), 4) for _ in range(n)]
        elif self.datatype == "BOOL":
            data = [rng.random() < 0.5 for _ in range(n)]
        elif self.datatype == "BYTES":
            data = [rng.choice(PROMPTS) for _ in range(n)]
        else:
            data = [rng.randrange(0, 10) for _ in range(n)]
        return {"name": self.name, "shape": shape, "datatype": self.datatype, "data": data}


@dataclass(frozen=True)
class Workload:
    #: "oip", "openai", "openai-chat", or "mixed" (a server that speaks OIP and OpenAI).
    api: str
    model: str
    mix: Mapping[str, int]
    inputs: tuple[InputSpec, ...] = ()
    #: how many numbers outputs[0] holds, when the metadata says (the answer check uses it).
    output_len: int | None = None
    #: request bodies from --payload, as JSON text; empty: built from metadata or prompts.
    payloads: tuple[str, ...] = ()
    #: (header name, environment variable that holds its value).
    headers: tuple[tuple[str, str], ...] = ()
    max_tokens: int = 8
    prompts: tuple[str, ...] = PROMPTS
    #: where the resolution came from, for the report ("GET /v2/models/mlp", a file).
    source: str = ""
    _rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    @property
    def infer_path(self) -> str:
        return f"/v2/models/{self.model}/infer"

    def describe(self) -> str:
        mix = ",".join(f"{k}={v}" for k, v in self.mix.items() if v)
        return f"api {self.api}, model {self.model!r}, mix {mix}" + (f" ({self.source})" if self.source else "")

    def header_values(self, environ: Mapping[str, str] | None = None) -> dict[str, str]:
        env = os.environ if environ is None else environ
        return {name: env.get(var, "") for name, var in self.headers}

    def body(self, kind: str) -> tuple[str, bytes, int | None]:
        """(path, JSON body, prompt or payload index) of one request of `kind`."""
        rng = self._rng
        if self.payloads:
            i = rng.randrange(len(self.payloads))
            doc = json.loads(self.payloads[i])
            if kind == "infer":
                return self.infer_path, self.payloads[i].encode(), i
            doc.setdefault("model", self.model)
            doc["stream"] = kind in STREAMING
            return _path(kind), json.dumps(doc).encode(), i
        if kind == "infer":
            inputs = [spec.tensor(rng) for spec in self.inputs]
            return self.infer_path, json.dumps({"inputs": inputs}).encode(), None
        i = rng.randrange(len(self.prompts))
        doc = {"model": self.model, "max_tokens": self.max_tokens, "temperature": 0,
               "stream": kind in STREAMING}
        if kind in ("chat", "chat_stream"):
            doc["messages"] = [{"role": "user", "content": self.prompts[i]}]
        else:
            doc["prompt"] = self.prompts[i]
        return _path(kind), json.dumps(doc).encode(), i

    # ------------------------------------------------------------------ transport
    def to_json(self) -> str:
        return json.dumps({
            "api": self.api, "model": self.model, "mix": dict(self.mix),
            "inputs": [[s.name, s.datatype, list(s.shape)] for s in self.inputs],
            "output_len": self.output_len, "payloads": list(self.payloads),
            "headers": [list(h) for h in self.headers], "max_tokens": self.max_tokens,
            "prompts": list(self.prompts), "source": self.source,
        })

    @classmethod
    def from_json(cls, text: str) -> Workload:
        d = json.loads(text)
        return cls(api=d["api"], model=d["model"], mix=d["mix"],
                   inputs=tuple(InputSpec(n, t, tuple(s)) for n, t, s in d["inputs"]),
                   output_len=d.get("output_len"), payloads=tuple(d.get("payloads") or ()),
                   headers=tuple((n, v) for n, v in d.get("headers") or ()),
                   max_tokens=int(d.get("max_tokens", 8)), prompts=tuple(d.get("prompts") or PROMPTS),
                   source=d.get("source", ""))


def reference(model: str = "mlp", mix: str | None = None, max_tokens: int = 8) -> Workload:
    """The reference server's workload, known without asking it (unit tests, benchmarks)."""
    return Workload("mixed", model, parse_mix(mix or DEFAULT_MIX["mixed"]),
                    (InputSpec("input", "FP32", (-1, 16)),), 8, max_tokens=max_tokens, source="reference model")


def _path(kind: str) -> str:
    return "/v1/chat/completions" if kind in ("chat", "chat_stream") else "/v1/completions"


# --------------------------------------------------------------------------- resolution
def parse_headers(specs: Sequence[str], environ: Mapping[str, str] | None = None) -> tuple[tuple[str, str], ...]:
    """`--header NAME=ENV_VAR` → ((NAME, ENV_VAR), ...); the variable must be set."""
    env = os.environ if environ is None else environ
    out = []
    for spec in specs:
        name, sep, var = (p.strip() for p in spec.partition("="))
        if not sep or not name or not var or not all(c.isalnum() or c in "-_" for c in name):
            raise UsageError(f"--header {spec!r}: expected NAME=ENV_VAR, e.g. Authorization=INFER_TOKEN "
                             f"(the value is read from the environment variable, never from the command line)")
        if var not in env:
            raise UsageError(f"--header {name}: the environment variable {var} is not set")
        out.append((name, var))
    return tuple(out)


def header_allowlist(text: str | None) -> frozenset[tuple[str, str]]:
    """A worker's own `INFERCHAOS_HEADERS` (`NAME=ENV_VAR,...`) as (name, variable) pairs;
    ValueError naming the bad item."""
    pairs = set()
    for item in (text or "").split(","):
        if not item.strip():
            continue
        name, sep, var = (p.strip() for p in item.partition("="))
        if not sep or not HEADER_NAME.fullmatch(name) or not ENV_VAR_NAME.fullmatch(var):
            raise ValueError(f"{HEADERS_ENV}: {item.strip()[:80]!r} is not NAME=ENV_VAR")
        pairs.add((name.lower(), var))
    return frozenset(pairs)


def allowed_headers(workload: Workload,
                    allowlist: frozenset[tuple[str, str]]) -> tuple[Workload, list[tuple[str, str]]]:
    """The workload with only the headers `allowlist` names (header names compare without
    case, variables exactly), and the (name, variable) pairs it dropped."""
    kept = tuple(h for h in workload.headers if (h[0].lower(), h[1]) in allowlist)
    dropped = [h for h in workload.headers if h not in kept]
    if not dropped:
        return workload, []
    return replace(workload, headers=kept), dropped


def read_payloads(path: Path) -> tuple[str, ...]:
    """One JSON object a line; blank lines skipped. Every problem is one line naming it."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UsageError(f"--payload {path}: cannot read it: {reason}") from None
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise UsageError(f"--payload {path}:{n}: not JSON: {exc.msg}") from None
        if not isinstance(doc, dict):
            raise UsageError(f"--payload {path}:{n}: expected a JSON object (one request body a line)")
        out.append(json.dumps(doc))
    if not out:
        raise UsageError(f"--payload {path}: holds no request body")
    if len(out) > MAX_PAYLOADS:
        raise UsageError(f"--payload {path}: {len(out)} bodies; at most {MAX_PAYLOADS}")
    return tuple(out)


def resolve(url: str, api: str = "auto", model: str | None = None, payload: Path | None = None,
            headers: Sequence[tuple[str, str]] = (), mix: str | None = None, max_tokens: int = 8,
            timeout_s: float = 10.0) -> Workload:
    """Ask the server at `url` what it serves and build the workload for it. A server that
    does not speak the API asked for, or does not list the model, is a UsageError: the
    options are wrong, and nothing has been injected yet."""
    if api not in APIS:
        raise UsageError(f"--api {api!r}: expected one of {', '.join(APIS)}")
    if model is not None and (not model.strip() or "/" in model and api == "oip"):
        raise UsageError(f"--model {model!r}: expected a model name")
    values = {name: os.environ.get(var, "") for name, var in headers}
    payloads = read_payloads(payload) if payload is not None else ()
    with httpx.Client(base_url=url.rstrip("/"), headers=values, timeout=timeout_s) as client:
        openai_ids = _openai_models(client) if api in ("openai", "openai-chat", "auto") else None
        oip_model = model or (None if api == "oip" else (openai_ids or [None])[0]) or _oip_index(client)
        oip_meta = _oip_metadata(client, oip_model) if api in ("oip", "auto") and oip_model else None
    if api == "auto":
        if openai_ids is None and oip_meta is None:
            raise UsageError(f"--api auto: {url} answers neither GET /v1/models (OpenAI) nor "
                             f"GET /v2/models/{oip_model or '<model>'} (OIP); give --api and --model")
        api = "mixed" if openai_ids is not None and oip_meta is not None else \
            "openai" if openai_ids is not None else "oip"
    source = []
    if api in ("openai", "openai-chat", "mixed"):
        if openai_ids is None:
            raise UsageError(f"--api {api}: {url} does not answer GET /v1/models as an OpenAI server would")
        name = model or openai_ids[0] if openai_ids else model
        if not openai_ids or name not in openai_ids:
            listed = ", ".join(openai_ids) if openai_ids else "nothing"
            raise UsageError(f"--model {name!r}: {url} does not serve it (GET /v1/models lists {listed})")
        model = name
        source.append("GET /v1/models")
    inputs: tuple[InputSpec, ...] = ()
    output_len = None
    if api in ("oip", "mixed"):
        if oip_meta is None:
            if not oip_model:
                raise UsageError(f"--api oip: give --model: {url} lists no model (POST /v2/repository/index)")
            raise UsageError(f"--model {oip_model!r}: {url} does not serve it (GET /v2/models/{oip_model} "
                             f"is not a model's metadata)")
        model = oip_model
        inputs, output_len = _inputs(oip_meta, url, oip_model)
        source.append(f"GET /v2/models/{oip_model}")
    assert model is not None
    chosen = parse_mix(mix or os.environ.get("INFERCHAOS_MIX") or DEFAULT_MIX[api])
    alien = [k for k, w in chosen.items() if w and k not in API_KINDS[api]]
    if alien:
        raise UsageError(f"task mix {', '.join(alien)}: the {api} API has only {', '.join(API_KINDS[api])}")
    if payload is not None:
        source.append(f"bodies from {payload}")
    return Workload(api, model, chosen, inputs, output_len, payloads, tuple(headers), max_tokens,
                    source=", ".join(source))


def _get_json(client: httpx.Client, method: str, path: str) -> Any | None:
    try:
        resp = client.request(method, path, **({"json": {}} if method == "POST" else {}))
    except httpx.HTTPError as exc:
        raise UsageError(f"{client.base_url}{path}: cannot reach the server: {type(exc).__name__}: {exc}") from None
    if resp.status_code in (401, 403):
        raise UsageError(f"{method} {client.base_url}{path}: HTTP {resp.status_code}: the server wants "
                         f"credentials (--header NAME=ENV_VAR)")
    if resp.status_code != 200:
        return None
    try:
        return resp.json()
    except ValueError:
        return None


def _openai_models(client: httpx.Client) -> list[str] | None:
    doc = _get_json(client, "GET", "/v1/models")
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        return None
    return [str(m["id"]) for m in doc["data"] if isinstance(m, dict) and m.get("id")]


def _oip_index(client: httpx.Client) -> str | None:
    """The first ready model of an OIP server's repository (MLServer and Triton list it)."""
    doc = _get_json(client, "POST", "/v2/repository/index")
    models = doc if isinstance(doc, list) else []
    ready = [m["name"] for m in models if isinstance(m, dict) and m.get("name")
             and str(m.get("state", "READY")).upper() == "READY"]
    return ready[0] if ready else None


def _oip_metadata(client: httpx.Client, model: str) -> dict | None:
    doc = _get_json(client, "GET", f"/v2/models/{model}")
    return doc if isinstance(doc, dict) and "error" not in doc else None


def _inputs(meta: dict, url: str, model: str) -> tuple[tuple[InputSpec, ...], int | None]:
    where = f"{url} GET /v2/models/{model}"
    specs = []
    for i, spec in enumerate(meta.get("inputs") or ()):
        try:
            name, datatype, shape = str(spec["name"]), str(spec["datatype"]).upper(), tuple(int(d) for d in spec["shape"])
        except (KeyError, TypeError, ValueError):
            raise UsageError(f"{where}: inputs[{i}] lacks a name, datatype or shape; give --payload FILE") from None
        if datatype not in OIP_DATATYPES:
            raise UsageError(f"{where}: inputs[{i}] has datatype {datatype!r}; give --payload FILE")
        specs.append(InputSpec(name, datatype, shape))
    if not specs:
        raise UsageError(f"{where}: the metadata lists no inputs; give --payload FILE with request bodies")
    outputs = meta.get("outputs") or []
    length = None
    if len(outputs) >= 1 and isinstance(outputs[0], dict):
        try:
            dims = [int(d) for d in outputs[0].get("shape") or ()]
            length = math.prod(d if d > 0 else 1 for d in dims) if dims else None
        except (TypeError, ValueError):
            length = None
    return tuple(specs), length


__all__ = ["APIS", "HEADERS_ENV", "InputSpec", "Workload", "WORKLOAD_ENV", "allowed_headers", "header_allowlist",
           "parse_headers", "read_payloads", "reference", "resolve"]
