"""The workload is learnt from the server: a small aiohttp server plays an OIP-only model
server (MLServer's shape), an OpenAI-only one (vLLM's), and one that wants a token. The
real ones are in tests/thirdparty/test_real_servers.py; here each refusal is planted on purpose."""

from __future__ import annotations

import json
import time

import pytest
from aiohttp import web

from inferchaos.ground.errors import UsageError
from inferchaos.load.runner import LoadProfile, LoadRunner
from inferchaos.load.workload import parse_headers, read_payloads, resolve
from inferchaos.probes.self_canary import SelfCanary
from tests.support.aioapp import ThreadedApp

SECRET = "s3cr3t-token-value"


class ModelServer(ThreadedApp):
    """`oip`: /v2/models/{name} metadata and infer; `openai`: /v1/models and completions.
    `token`: every request must carry it. `drift`: answers change once set."""

    def __init__(self, oip: bool = True, openai: bool = False, token: str | None = None) -> None:
        super().__init__()
        self.oip, self.openai, self.token = oip, openai, token
        self.drift = False
        self.bodies: list[dict] = []
        self.auth_seen: set[str | None] = set()

    def _denied(self, request: web.Request) -> web.Response | None:
        self.auth_seen.add(request.headers.get("Authorization"))
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorised"}, status=401)
        return None

    async def metadata(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) or not self.oip or request.match_info["name"] != "iris":
            return denied or web.json_response({"error": "Model not found"}, status=404)
        return web.json_response({"name": "iris", "platform": "sklearn", "inputs": [
            {"name": "features", "datatype": "INT32", "shape": [-1, 4]},
            {"name": "mask", "datatype": "BOOL", "shape": [-1, 2]}], "outputs": []})

    async def index(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": "iris", "state": "READY"}] if self.oip else [])

    async def infer(self, request: web.Request) -> web.Response:
        if denied := self._denied(request):
            return denied
        body = await request.json()
        self.bodies.append(body)
        total = sum(sum(x for x in i["data"] if not isinstance(x, bool)) for i in body["inputs"])
        return web.json_response({"model_name": "iris", "outputs": [
            {"name": "predict", "shape": [1], "datatype": "FP64", "data": [float(total % 3) + (0.5 if self.drift else 0)]}]})

    async def models(self, request: web.Request) -> web.Response:
        if (denied := self._denied(request)) or not self.openai:
            return denied or web.Response(status=404)
        return web.json_response({"object": "list", "data": [{"id": "tiny-llama", "object": "model"}]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        if denied := self._denied(request):
            return denied
        body = await request.json()
        self.bodies.append(body)
        text = f"echo {body.get('prompt')}" + (" drifted" if self.drift else "")
        if not body.get("stream"):
            return web.json_response({"choices": [{"index": 0, "text": text}]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in text.split(" "):
            await resp.write(b"data: " + json.dumps({"choices": [{"index": 0, "text": word + " "}]}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/v2/models/{name}", self.metadata)
        app.router.add_post("/v2/models/{name}/infer", self.infer)
        app.router.add_post("/v2/repository/index", self.index)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)


def test_an_oip_server_gets_bodies_built_from_its_own_metadata(tmp_path):
    with ModelServer(oip=True) as server:
        w = resolve(server.url)  # auto: no /v1/models, the repository index names the model
        assert (w.api, w.model, dict(w.mix)) == ("oip", "iris", {"infer": 1})
        assert [(i.name, i.datatype, i.shape) for i in w.inputs] == [("features", "INT32", (-1, 4)),
                                                                     ("mask", "BOOL", (-1, 2))]
        with LoadRunner(server.url, tmp_path / "r.jsonl", LoadProfile(rate=50.0, workload=w)) as load:
            time.sleep(1.5)
        records = load.records()
    assert len(records) >= 40 and all(r.ok and r.kind == "infer" for r in records), records[:3]
    body = server.bodies[0]["inputs"]
    assert [(i["name"], i["datatype"], i["shape"]) for i in body] == [("features", "INT32", [1, 4]),
                                                                      ("mask", "BOOL", [1, 2])]
    assert all(isinstance(x, int) for x in body[0]["data"]) and all(isinstance(x, bool) for x in body[1]["data"])


def test_an_openai_server_gets_its_listed_model_and_streams():
    with ModelServer(oip=False, openai=True) as server:
        w = resolve(server.url)
        assert (w.api, w.model, dict(w.mix)) == ("openai", "tiny-llama", {"completion": 1, "stream": 1})
        with pytest.raises(UsageError, match="'gpt-4': .* lists tiny-llama"):
            resolve(server.url, "openai", "gpt-4")
        with pytest.raises(UsageError, match="--api oip: give --model"):
            resolve(server.url, "oip")


@pytest.mark.parametrize("api, model, words", [
    ("oip", "resnet", ["'resnet'", "/v2/models/resnet"]),
    ("openai", None, ["--api openai", "GET /v1/models"]),
    ("openai-chat", None, ["--api openai-chat"]),
])
def test_a_server_that_does_not_speak_the_api_or_serve_the_model_is_refused(api, model, words):
    with ModelServer(oip=True) as server, pytest.raises(UsageError) as err:
        resolve(server.url, api, model)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)


def test_a_mix_the_api_cannot_serve_is_refused():
    with ModelServer(oip=True) as server, pytest.raises(UsageError, match="the oip API has only infer"):
        resolve(server.url, mix="infer=1,stream=1")


def test_payload_bodies_are_sent_as_written(tmp_path):
    payload = tmp_path / "bodies.jsonl"
    payload.write_text('{"inputs": [{"name": "features", "datatype": "INT32", "shape": [1, 4], "data": [7, 7, 7, 7]}]}\n\n')
    with ModelServer(oip=True) as server:
        w = resolve(server.url, "oip", "iris", payload=payload)
        assert w.payloads and "bodies from" in w.source
        with LoadRunner(server.url, tmp_path / "r.jsonl", LoadProfile(rate=30.0, workload=w)) as load:
            time.sleep(1.0)
    assert load.records() and all(r.ok and r.prompt == 0 for r in load.records())
    assert all(b["inputs"][0]["data"] == [7, 7, 7, 7] for b in server.bodies)


@pytest.mark.parametrize("text, words", [("", ["holds no request body"]), ("[1, 2]\n", [":1:", "JSON object"]),
                                         ('{"a": 1}\n{"a": \n', [":2:", "not JSON"])])
def test_bad_payload_files_are_one_line(tmp_path, text, words):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        read_payloads(path)
    assert all(w in str(err.value) for w in words) and "\n" not in str(err.value)


def test_auth_headers_come_from_the_environment_and_are_never_written_down(tmp_path, monkeypatch):
    monkeypatch.setenv("INFER_TOKEN", f"Bearer {SECRET}")
    with ModelServer(oip=True, token=SECRET) as server:
        with pytest.raises(UsageError, match="HTTP 401: the server wants credentials"):
            resolve(server.url)
        headers = parse_headers(["Authorization=INFER_TOKEN"])
        w = resolve(server.url, headers=headers)
        log = tmp_path / "r.jsonl"
        with LoadRunner(server.url, log, LoadProfile(rate=30.0, workload=w)) as load:
            time.sleep(1.0)
    records = load.records()
    # an arrival a CPU-starved client never sent is on the record as `incomplete` (CI saw
    # one); what this test is about is that every request sent carried the credentials
    failed = [(r.status, r.error) for r in records if not r.ok and not r.incomplete]
    assert any(r.ok for r in records) and not failed, failed
    assert not any(r.status == 401 for r in records)
    assert f"Bearer {SECRET}" in server.auth_seen
    for written in (log, load.locust_log):
        assert SECRET not in written.read_text()
    assert SECRET not in " ".join(load.command()) and SECRET not in w.to_json()
    with pytest.raises(UsageError, match="NO_SUCH_VAR_HERE is not set"):
        parse_headers(["Authorization=NO_SUCH_VAR_HERE"])


@pytest.mark.parametrize("openai", [False, True])
def test_the_self_consistent_golden_set_catches_answers_that_changed(openai):
    with ModelServer(oip=not openai, openai=openai) as server:
        w = resolve(server.url)
        canary = SelfCanary(server.url, w, interval_s=0.02)
        for case in canary.cases:  # the baseline: the references
            assert canary.check(case).ok
        canary.freeze()
        assert all(canary.check(c).ok for c in canary.cases)  # the same answers: right
        server.drift = True
        wrong = [canary.check(c) for c in canary.cases]
    assert all(c.answered and not c.ok for c in wrong)
    assert all(("baseline" in c.detail) for c in wrong), [c.detail for c in wrong]
