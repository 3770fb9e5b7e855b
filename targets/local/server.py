"""The reference inference server: a stand-in for vLLM/Triton that behaves like them.

The suite's probes must be honest against a real engine, so this one speaks the same
protocols (KServe v2 and OpenAI completions), exposes the same metric names, loads its
weights over HTTP before it is ready, batches dynamically on one serial "GPU", dies on
device OOM as vLLM does (or rejects, if told to), and drains on SIGTERM within a
shutdown timeout. Computation is real (numpy) and deterministic, so a wrong answer can
be told apart from a slow one. Run: `python -m inferchaos.targets.local.server --help`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

import aiohttp
import numpy as np
from aiohttp import web
from prometheus_client import disable_created_metrics

from inferchaos.targets.local import model as mdl
from inferchaos.targets.local.batching import Batcher, EngineUnavailable, ItemResult
from inferchaos.targets.local.cuda import CudaError, CudaRuntime
from inferchaos.targets.local.protocol import BadRequest, parse_infer
from inferchaos.targets.local.server_config import ServerConfig, parse_args
from inferchaos.targets.local.server_metrics import CONTENT_TYPE, DeviceMemory, ServerMetrics
from inferchaos.targets.local.vgpu import DeviceOutOfMemory, VirtualDevice

VERSION = "0.1.0"
REPLICA_HEADER = "x-inferchaos-replica"
FEATURE_VERSION_HEADER = "x-inferchaos-feature-version"
FEATURE_AGE_HEADER = "x-inferchaos-feature-age-s"
#: Paths that answer while draining (probes must see "not ready", not "draining").
PROBE_PATHS = frozenset({"/health", "/metrics", "/v2/health/live", "/v2/health/ready"})
ABORTED = "aborted: shutdown timeout"
OOM_EXIT_GRACE_S = 0.5
#: where the `wrong_answers` fault switches output perturbation on (PUT) and off (DELETE).
PERTURB_PATH = "/inferchaos/perturb"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class FeatureUse:
    """The feature record a batch used: reported back, never fed into the numbers."""

    version: int | None = None
    age_s: float | None = None

    def headers(self) -> dict[str, str]:
        return {
            FEATURE_VERSION_HEADER: "" if self.version is None else str(self.version),
            FEATURE_AGE_HEADER: "" if self.age_s is None else f"{self.age_s:.3f}",
        }


def sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event).encode() + b"\n\n"


def log(name: str, msg: str) -> None:
    print(f"server {name}: {msg}", flush=True)


def error(status: int, msg: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": msg}, status=status, headers=headers)


class ReferenceServer:
    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.device = VirtualDevice(cfg.vgpu_dir, cfg.device) if cfg.vgpu_dir else None
        self.metrics = ServerMetrics(cfg.model, f"vgpu-{cfg.device}")
        self.model: mdl.Model | None = None
        self.batcher: Batcher | None = None
        self.session: aiohttp.ClientSession | None = None
        self.site: web.TCPSite | None = None
        #: (version, its age when read, monotonic time of the read): the age is the store's
        #: own count, carried on on this process's monotonic clock while reads fail
        self.last_features: tuple[int, float, float] | None = None
        self._feature_retry_at = 0.0  # monotonic; reads pause until then after a failure
        self.draining = False
        self.dead = False
        self.abort = asyncio.Event()  # decoding streams stop when set
        self.abort_reason = ABORTED
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.decoding = 0
        self.stopped = asyncio.Event()
        self.exit_code = 0
        self.perturb_sigma = 0.0
        self._rng = np.random.default_rng()
        self.cuda: CudaRuntime | None = None

    # ------------------------------------------------------------ lifecycle
    async def run(self) -> int:
        cfg = self.cfg
        if self.device is not None and not self.device.exists():
            log(cfg.name, f"virtual GPU {cfg.device} does not exist in {cfg.vgpu_dir}")
            return 2
        log(cfg.name, f"starting (model {cfg.model!r}, store {cfg.model_store})")
        cuda = None
        if cfg.cudart is not None:
            try:
                cuda = CudaRuntime(cfg.cudart)
            except (OSError, AttributeError) as exc:
                log(cfg.name, f"cannot use the CUDA runtime {cfg.cudart}: {exc}")
                return 2
        self.cuda = cuda
        self.session = aiohttp.ClientSession()
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        self.site = web.TCPSite(runner, cfg.host, cfg.port)
        try:
            await self.site.start()
        except OSError as exc:
            log(cfg.name, f"cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}")
            await runner.cleanup()
            await self.session.close()
            return 2
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        log(cfg.name, f"listening on {cfg.host}:{cfg.port}")
        loader = asyncio.create_task(self._load())
        await self.stopped.wait()
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loader
        if self.batcher is not None:
            await self.batcher.close(self.abort_reason)
        await runner.cleanup()
        await self.session.close()
        if self.device is not None:
            self.device.free("weights")
        log(cfg.name, f"exit {self.exit_code}")
        return self.exit_code

    def _finish(self, code: int) -> None:
        self.exit_code = code
        self.stopped.set()

    async def _load(self) -> None:
        """Fetch the weights until it works: a slow or stalled store only delays readiness."""
        cfg, delay = self.cfg, 0.2
        url = f"{cfg.model_store.rstrip('/')}/models/{cfg.model}/weights"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
        assert self.session is not None
        while True:
            try:
                async with self.session.get(url, timeout=timeout) as resp:
                    if resp.status == 200:
                        weights = mdl.weights_from_bytes(await resp.read())
                        if not {"embedding", "w1", "b1", "w2", "b2"} <= weights.keys():
                            raise ValueError("weights file lacks tensors")
                        break
                    if resp.status < 500:
                        log(cfg.name, f"model store answered {resp.status} for {url}; giving up")
                        return self._finish(1)
                    log(cfg.name, f"model store answered {resp.status}; retrying in {delay:.1f}s")
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                log(cfg.name, f"model store unreachable ({type(exc).__name__}); retrying in {delay:.1f}s")
            except Exception as exc:  # a truncated or corrupt weights file: fetch it again
                log(cfg.name, f"bad weights ({exc}); retrying in {delay:.1f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        while self.device is not None:
            try:
                await asyncio.to_thread(self.device.allocate, cfg.weights_bytes, "weights")
                break
            except DeviceOutOfMemory as exc:
                log(cfg.name, f"loading weights: {exc}")
                if cfg.oom == "exit":
                    self.dead = True
                    return self._finish(1)
                await asyncio.sleep(1.0)  # reject mode: stay up, not ready, try again
        if not await self._warm_up():
            return None
        self.model = mdl.Model(cfg.model, weights)
        self.batcher = Batcher(
            self.model, cfg.batch, self.device, before_batch=self._read_features,
            on_oom=self._on_oom, on_queue_time=self.metrics.observe_queue, cuda=self.cuda, on_fatal=self._on_fatal,
        )
        self.batcher.start()
        log(cfg.name, "model loaded; ready")

    async def _warm_up(self) -> bool:
        """One batch's worth of CUDA calls before saying ready, as vLLM's profiling run and
        Triton's model warm-up do: a GPU that fails them never gets traffic. False when the
        process is to end (exit on OOM, or a lost context); reject mode retries until it works."""
        cfg = self.cfg
        while self.cuda is not None:
            try:
                ptr = self.cuda.malloc(cfg.batch.max_batch_size * cfg.batch.batch_bytes_per_item)
                self.cuda.launch()
                self.cuda.free(ptr)
                return True
            except CudaError as exc:
                fatal = not exc.out_of_memory or cfg.oom == "exit"
                log(cfg.name, f"warm-up: {exc}" + ("; exiting" if fatal else "; not ready, retrying in 1s"))
                if fatal:
                    self.dead = True
                    self._finish(1)
                    return False
                await asyncio.sleep(1.0)
        return True

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.draining or self.dead:
            log(self.cfg.name, f"second {sig.name}; exiting now")
            os._exit(0 if not self.dead else 1)
        self.draining = True
        log(self.cfg.name, f"{sig.name}: draining {self.inflight} in-flight, up to {self.cfg.shutdown_timeout_s}s")
        asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        if self.site is not None:
            await self.site.stop()  # closes the listening socket; open connections stay
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), self.cfg.shutdown_timeout_s)
        if self.inflight:
            log(self.cfg.name, f"shutdown timeout: aborting {self.inflight} request(s)")
            await self._abort_all(ABORTED)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.idle.wait(), 2.0)
        self._finish(0)

    async def _abort_all(self, reason: str) -> None:
        self.abort_reason = reason
        self.abort.set()
        if self.batcher is not None:
            await self.batcher.close(reason)

    def _on_fatal(self, exc: CudaError) -> None:
        """A lost CUDA context: no batch can run in this process again, whatever `--oom` says."""
        log(self.cfg.name, f"{exc}; CUDA context lost, engine dead, exiting")
        if not self.dead:
            self.dead = True
            asyncio.get_running_loop().create_task(self._die(f"engine dead: {exc}"))

    def _on_oom(self, exc: DeviceOutOfMemory | CudaError) -> None:
        log(self.cfg.name, f"{exc}" + ("; engine dead, exiting" if self.cfg.oom == "exit" else "; rejected batch"))
        if self.cfg.oom == "exit" and not self.dead:
            self.dead = True
            asyncio.get_running_loop().create_task(self._die(f"engine dead: {exc}"))

    async def _die(self, reason: str) -> None:
        started = time.monotonic()
        await self._abort_all(reason)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.idle.wait(), 2.0)
        await asyncio.sleep(max(0.0, OOM_EXIT_GRACE_S - (time.monotonic() - started)))
        self._finish(1)

    async def _read_features(self) -> FeatureUse:
        """Once per batch, with a timeout; on any failure the last good record is used and
        reported, and reads pause for `feature_backoff_s` (a circuit breaker: a slow store
        must not cost every batch its timeout, or a slow dependency becomes an outage)."""
        if time.monotonic() >= self._feature_retry_at:
            url = f"{self.cfg.feature_store.rstrip('/')}/features/default"
            asked_at = time.monotonic()  # the age is the store's at its answer: count the way back too
            assert self.session is not None
            try:
                timeout = aiohttp.ClientTimeout(total=self.cfg.feature_timeout_s)
                async with self.session.get(url, timeout=timeout) as resp:
                    if resp.status == 200:  # a quick "no features yet" costs nothing: no backoff
                        body = await resp.json()
                        age = float(body["age_s"])
                        if not 0.0 <= age < math.inf:  # input from the network: a record no store could hold
                            raise ValueError(f"feature age {age!r}")
                        self.last_features = (int(body["version"]), age, asked_at)
            except (aiohttp.ClientError, TimeoutError):
                self._feature_retry_at = time.monotonic() + self.cfg.feature_backoff_s
            except (ValueError, KeyError, TypeError):
                pass
        if self.last_features is None:
            return FeatureUse()
        version, age_s, read_at = self.last_features
        return FeatureUse(version, round(age_s + time.monotonic() - read_at, 6))

    @contextlib.asynccontextmanager
    async def _track(self) -> AsyncIterator[None]:
        self.inflight += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self.idle.set()

    @property
    def ready(self) -> bool:
        return self.batcher is not None and not self.draining and not self.dead

    def _unavailable(self) -> web.Response | None:
        if self.dead:
            return error(500, self.abort_reason, FeatureUse().headers())
        if self.batcher is None:
            return error(503, "model not ready", FeatureUse().headers())
        return None

    # ------------------------------------------------------------------ HTTP
    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024**2)
        app.on_response_prepare.append(self._stamp)
        r = app.router
        r.add_get("/v2/health/live", lambda _: web.Response(status=200))
        r.add_get("/v2/health/ready", lambda _: web.Response(status=200 if self.ready else 400))
        r.add_get("/v2/models/{name}/ready", self.model_ready)
        r.add_get("/v2", self.server_metadata)
        r.add_get("/v2/models/{name}", self.model_metadata)
        r.add_post("/v2/models/{name}/infer", self.infer)
        r.add_post("/v1/completions", self.completions)
        r.add_get("/v1/models", self.openai_models)
        r.add_get("/health", lambda _: web.Response(status=503 if self.dead or self.draining else 200))
        r.add_get("/metrics", self.metrics_handler)
        r.add_put(PERTURB_PATH, self.set_perturb)
        r.add_delete(PERTURB_PATH, self.clear_perturb)
        return app

    async def set_perturb(self, request: web.Request) -> web.Response:
        """The `wrong_answers` fault: answers stay 200 and well-formed, the numbers go wrong."""
        try:
            sigma = float((await request.json())["sigma"])
        except (KeyError, TypeError, ValueError, json.JSONDecodeError):
            return error(400, 'expected {"sigma": <number > 0>}')
        if not sigma > 0:
            return error(400, f"sigma must be > 0, got {sigma}")
        self.perturb_sigma = sigma
        log(self.cfg.name, f"perturbing infer outputs (sigma {sigma})")
        return web.json_response({"sigma": sigma})

    async def clear_perturb(self, _: web.Request) -> web.Response:
        if self.perturb_sigma:
            log(self.cfg.name, "infer outputs exact again")
        self.perturb_sigma = 0.0
        return web.json_response({"sigma": 0.0})

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self.draining and request.path not in PROBE_PATHS and not request.path.endswith("/ready"):
            return error(503, "draining")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return error(exc.status, exc.reason)

    async def _stamp(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers[REPLICA_HEADER] = self.cfg.name
        if self.draining:
            response.force_close()  # clients must reconnect elsewhere

    async def model_ready(self, request: web.Request) -> web.Response:
        if request.match_info["name"] != self.cfg.model:
            return web.Response(status=404)
        return web.Response(status=200 if self.ready else 400)

    async def server_metadata(self, _: web.Request) -> web.Response:
        return web.json_response({"name": "inferchaos-reference", "version": VERSION, "extensions": []})

    async def model_metadata(self, request: web.Request) -> web.Response:
        if request.match_info["name"] != self.cfg.model:
            return error(404, f"unknown model {request.match_info['name']!r}")
        return web.json_response({
            "name": self.cfg.model, "versions": ["1"], "platform": "numpy",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, mdl.INPUT_DIM]}],
            "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, mdl.OUTPUT_DIM]}],
        })

    async def metrics_handler(self, _: web.Request) -> web.Response:
        mem = DeviceMemory()
        if self.device is not None:
            with contextlib.suppress(OSError):
                usage = await asyncio.to_thread(self.device.usage)
                mem = DeviceMemory(usage.used, usage.capacity)
        self.metrics.set_memory(mem)
        b = self.batcher
        self.metrics.set_load((b.running if b else 0) + self.decoding, b.waiting if b else 0)
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _submit(self, rows: np.ndarray) -> ItemResult | web.Response:
        """Run rows through the batcher; an error response instead of a result on failure."""
        assert self.batcher is not None
        try:
            return await self.batcher.submit(rows)
        except (DeviceOutOfMemory, CudaError, EngineUnavailable) as exc:
            return error(500, str(exc), FeatureUse().headers())

    async def infer(self, request: web.Request) -> web.Response:
        if request.match_info["name"] != self.cfg.model:
            return error(404, f"unknown model {request.match_info['name']!r}")
        try:
            req_id, rows = parse_infer(await request.json())
        except (BadRequest, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error(400, f"bad request: {exc}")
        if (unavailable := self._unavailable()) is not None:
            return unavailable
        async with self._track():
            t0 = time.monotonic()
            res = await self._submit(rows)
            if isinstance(res, web.Response):
                return res
            self.metrics.e2e.observe(time.monotonic() - t0)
            feats: FeatureUse = res.context or FeatureUse()
            outputs = res.outputs
            if self.perturb_sigma:
                outputs = mdl.perturb(outputs, self.perturb_sigma, self._rng)
            return web.json_response({
                "model_name": self.cfg.model, "model_version": "1", "id": req_id or uuid.uuid4().hex,
                "outputs": [{"name": "probabilities", "shape": list(outputs.shape), "datatype": "FP32",
                             "data": outputs.reshape(-1).tolist()}],
                "parameters": {"replica": self.cfg.name, "feature_version": feats.version,
                               "feature_age_s": feats.age_s},
            }, headers=feats.headers())

    async def _pause(self) -> bool:
        """One token's worth of decoding time; True when the request must be aborted."""
        if self.abort.is_set():
            return True
        try:
            await asyncio.wait_for(self.abort.wait(), self.cfg.token_latency_s)
            return True
        except TimeoutError:
            return False

    async def openai_models(self, request: web.Request) -> web.Response:
        """The model list as vLLM answers it: what a client learns the model id from."""
        return web.json_response({"object": "list", "data": [
            {"id": self.cfg.model, "object": "model", "created": 0, "owned_by": "inferchaos"}]})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
                raise BadRequest("'prompt' must be a string")
            max_tokens, stream = body.get("max_tokens", 16), body.get("stream", False)
            if type(max_tokens) is not int or max_tokens < 1:
                raise BadRequest("'max_tokens' must be an integer >= 1")
            if not isinstance(stream, bool):
                raise BadRequest("'stream' must be a boolean")
        except (BadRequest, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error(400, f"bad request: {exc}")
        if body.get("model", self.cfg.model) != self.cfg.model:
            return error(404, f"the model {body.get('model')!r} does not exist")
        if (unavailable := self._unavailable()) is not None:
            return unavailable
        async with self._track():
            return await self._complete(request, body["prompt"], max_tokens, stream)

    async def _complete(
        self, request: web.Request, prompt: str, max_tokens: int, stream: bool
    ) -> web.StreamResponse:
        assert self.model is not None
        t0 = time.monotonic()
        tokens = mdl.tokenize(prompt)
        n_prompt = len(tokens)
        res = await self._submit(self.model.embed(tokens)[None, :])  # prefill: the first token
        if isinstance(res, web.Response):
            return res
        self.metrics.ttft.observe(time.monotonic() - t0)
        feats: FeatureUse = res.context or FeatureUse()
        words: list[str] = []
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": self.cfg.model}

        def choice(text: str, last: bool) -> dict:
            return {**head, "choices": [{"index": 0, "text": text, "logprobs": None,
                                         "finish_reason": "length" if last else None}]}

        def step(k: int) -> str:
            words.append(mdl.WORDS[k])
            tokens.append(mdl.tokenize(mdl.WORDS[k])[0])
            return words[-1] if len(words) == 1 else " " + words[-1]

        first = step(int(np.argmax(res.outputs[0])))
        self.decoding += 1
        try:
            if not stream:
                for _ in range(max_tokens - 1):
                    if await self._pause():
                        return error(500, self.abort_reason, feats.headers())
                    step(self.model.next_token(tokens))
                self.metrics.e2e.observe(time.monotonic() - t0)
                usage = {"prompt_tokens": n_prompt, "completion_tokens": len(words),
                         "total_tokens": n_prompt + len(words)}
                return web.json_response({**choice(" ".join(words), True), "usage": usage}, headers=feats.headers())
            resp = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-cache", **feats.headers()})
            await resp.prepare(request)
            try:
                await resp.write(sse(choice(first, max_tokens == 1)))
                for i in range(1, max_tokens):
                    if await self._pause():  # end the stream without [DONE]: the client sees it was cut
                        await resp.write(sse({"error": self.abort_reason}))
                        break
                    await resp.write(sse(choice(step(self.model.next_token(tokens)), i == max_tokens - 1)))
                else:
                    await resp.write(b"data: [DONE]\n\n")
                await resp.write_eof()
            except (ConnectionResetError, aiohttp.ClientConnectionResetError):
                pass  # the client went away; nothing left to tell it
            self.metrics.e2e.observe(time.monotonic() - t0)
            return resp
        finally:
            self.decoding -= 1


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    disable_created_metrics()  # this process is the engine: no `_created` series beside Triton's names
    sys.exit(asyncio.run(ReferenceServer(cfg).run()))


if __name__ == "__main__":
    main()
