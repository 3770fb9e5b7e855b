"""The fault catalogue: every fault id, its class, its parameters with their meaning and
defaults, and its blast radius — what `inferchaos faults`, `plan` and `inject` show and use.

Defaults are read from the fault classes themselves, so the catalogue cannot drift from
what a fault does when a parameter is left out. Parameters arrive as the `key=value`
strings an operator types; every mistake is one `UsageError` line naming the fault, the
key and what it accepts, raised before anything is touched.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from inferchaos.faults.base import BlastRadius, Fault
from inferchaos.faults.autoscaled_surge import AutoscaledSurge
from inferchaos.faults.cuda_errors import ERRORS as CUDA_ERRORS, CudaErrors
from inferchaos.faults.dependency_latency import DEPENDENCIES, DependencyLatency
from inferchaos.faults.gpu_hog import parse_bytes
from inferchaos.faults.gpu_oom import GpuOom
from inferchaos.faults.ledger import Ledger
from inferchaos.faults.model_load_stall import ModelLoadStall
from inferchaos.faults.pipeline_lag import MODES, PipelineLag
from inferchaos.faults.replica_crash import ReplicaCrash
from inferchaos.faults.replica_hang import ReplicaHang
from inferchaos.faults.spot_reclamation import SpotReclamation
from inferchaos.faults.traffic_surge import TrafficSurge
from inferchaos.faults.wrong_answers import WrongAnswers
from inferchaos.errors import UsageError

#: What a `kind` accepts, for messages and the catalogue table.
KINDS = {
    "seconds": "a number of seconds >= 0",
    "ms": "a number of milliseconds >= 0",
    "number": "a number",
    "count": "a whole number >= 0",
    "radius": "a count (e.g. 1) or a share of the replicas (e.g. 50%)",
    "size": "bytes free to leave: 0, 256MiB, 1.5GB, or a share of capacity such as 2%",
    "choice": "one of",
    "bool": "true or false",
}
TRUE, FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    meaning: str
    choices: tuple[str, ...] = ()
    #: numbers: the value must be above this (not equal), e.g. bandwidth 0 means nothing flows.
    above: float | None = None
    #: "inf" accepted (a stall until revert).
    allow_inf: bool = False
    #: "none" accepted: keep the cluster's own setting.
    nullable: bool = False

    def accepts(self) -> str:
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        text = f"a number above {self.above:g}" if self.above is not None else KINDS[self.kind]
        return text + (" or inf" if self.allow_inf else "") + (" or none" if self.nullable else "")

    def parse(self, fault: str, text: str) -> Any:
        where = f"{fault}: {self.name}={text if text.isprintable() else repr(text)}"
        raw = text.strip()
        if self.nullable and raw.lower() in ("none", "default"):
            return None
        if self.kind == "choice":
            if raw not in self.choices:
                raise UsageError(f"{where}: expected one of {', '.join(self.choices)}{_suggest(raw, self.choices)}")
            return raw
        if self.kind == "bool":
            if raw.lower() in TRUE or raw.lower() in FALSE:
                return raw.lower() in TRUE
            raise UsageError(f"{where}: expected true or false")
        if self.kind in ("radius", "size"):
            try:
                self._text(raw)
            except UsageError as exc:
                raise UsageError(f"{where}: {exc}") from None
            return raw
        return self._number(where, raw)

    def _text(self, raw: str) -> None:
        if self.kind == "radius":
            BlastRadius.parse(raw)  # counts >= 1, shares in (0, 100]
            return
        m = re.fullmatch(r"(\d+(?:\.\d+)?)%", raw)
        if m and not float(m.group(1)) <= 100:
            raise UsageError("a share of capacity must be within 0%..100%")
        if not m:
            parse_bytes(raw)

    def _number(self, where: str, raw: str) -> float | int:
        try:
            value = int(raw) if self.kind == "count" else float(raw)
        except ValueError:
            raise UsageError(f"{where}: expected {self.accepts()}") from None
        if isinstance(value, float) and math.isnan(value):
            raise UsageError(f"{where}: expected {self.accepts()}")
        if isinstance(value, float) and math.isinf(value) and not (self.allow_inf and value > 0):
            raise UsageError(f"{where}: expected a finite number ({self.accepts()})")
        if self.above is not None:
            if not value > self.above:
                raise UsageError(f"{where}: must be above {self.above:g}")
        elif self.kind != "number" and value < 0:
            raise UsageError(f"{where}: must be 0 or more")
        return value


@dataclass(frozen=True)
class FaultSpec:
    id: str
    cls: type[Fault]
    summary: str
    #: what the fault may touch, and how that is bounded.
    blast_radius: str
    params: tuple[Param, ...]
    #: why it cannot be injected outside an experiment (None: it can).
    standalone_refusal: str | None = None

    @property
    def runbook(self) -> str:
        return f"runbooks/{self.id}.md"

    def param(self, name: str) -> Param:
        return next(p for p in self.params if p.name == name)

    def defaults(self) -> dict[str, Any]:
        """Each parameter's default, from the fault class itself."""
        fields = {f.name: f for f in dataclasses.fields(self.cls)}
        out = {}
        for p in self.params:
            f = fields[p.name]
            out[p.name] = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        return out

    def parse(self, pairs: Sequence[str]) -> dict[str, Any]:
        """`["notice_s=5", "replicas=2"]` → {"notice_s": 5.0, "replicas": "2"}; one line per mistake."""
        out: dict[str, Any] = {}
        names = [p.name for p in self.params]
        for raw in pairs:
            key, sep, text = raw.partition("=")
            key = key.strip()
            if not sep or not key:
                raise UsageError(f"{self.id}: {raw!r}: parameters are KEY=VALUE, e.g. "
                                 f"{self.params[0].name}={_example(self.params[0])}" if self.params
                                 else f"{self.id}: {raw!r}: this fault takes no parameters")
            if key not in names:
                known = f"parameters: {', '.join(names)}" if names else "it takes no parameters"
                close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise UsageError(f"{self.id}: unknown parameter {key!r} ({hint}{known})")
            if key in out:
                raise UsageError(f"{self.id}: parameter {key!r} given twice")
            out[key] = self.param(key).parse(self.id, text)
        return out

    def build(self, target: Any, ledger: Ledger, params: dict[str, Any]) -> Fault:
        """The fault, constructed (its own checks run here; nothing is touched yet)."""
        kwargs = dict(params)
        if "target" in {f.name for f in dataclasses.fields(self.cls)}:
            kwargs["target"] = target
        return self.cls(ledger=ledger, **kwargs)


def _example(p: Param) -> str:
    return {"radius": "1", "size": "256MiB", "bool": "true", "choice": p.choices[0] if p.choices else "x"}.get(
        p.kind, "5")


def _suggest(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


REPLICAS = Param("replicas", "radius", "blast radius: how many replicas (count) or which share (e.g. 50%) to hit; "
                 "refused if it would leave no replica serving")
PROVISIONING = Param("provisioning_delay_s", "seconds", "seconds before a lost replica's replacement starts "
                     "(a node being provisioned); none keeps the cluster's setting", nullable=True)
WARM_POOL = Param("warm_pool", "count", "pre-loaded standby replicas to have ready before the fault "
                  "(filled and awaited first); none keeps the cluster's setting", nullable=True)
RADIUS_REPLICAS = ("`replicas` of the active replicas (count or %, default 1); at least one always keeps "
                   "serving")

CATALOGUE: dict[str, FaultSpec] = {s.id: s for s in (
    FaultSpec(
        "spot_reclamation", SpotReclamation,
        "a spot/preemptible node is reclaimed: notice (SIGTERM, drain), SIGKILL at the deadline, replacement "
        "after the provisioning delay and a cold start (or a warm-pool replica at once)",
        RADIUS_REPLICAS,
        (REPLICAS,
         Param("notice_s", "seconds", "seconds between the notice (SIGTERM) and the kill (SIGKILL)"),
         PROVISIONING, WARM_POOL)),
    FaultSpec(
        "gpu_oom", GpuOom,
        "a hog process takes device memory on a replica's GPU until only `leave` is free; the server's next "
        "batch fails like CUDA OOM and it exits (or rejects, with `up --oom reject`)",
        "the GPUs of `replicas` replicas (count or %, default 1); at least one replica keeps serving",
        (REPLICAS,
         Param("leave", "size", "device memory to leave free: bytes (0, 256MiB, 1.5GB) or a share of capacity (2%)"),
         Param("ramp_s", "seconds", "seconds over which the pressure grows (0: at once; >0: a leak)"))),
    FaultSpec(
        "cuda_errors", CudaErrors,
        "the server's own CUDA calls fail (an LD_PRELOAD shim in front of libcudart/libcuda): allocations "
        "return out-of-memory, or launches an illegal address or an ECC error (the context is lost); each "
        "victim is restarted with the shim, inert, before the baseline",
        "the CUDA calls of `replicas` replicas (count or %, default 1), and of any replica started on their "
        "GPUs while it holds; at least one replica keeps serving",
        (REPLICAS,
         Param("error", "choice", "oom: allocations fail; illegal_address, ecc: kernel launches fail",
               choices=tuple(CUDA_ERRORS)),
         Param("after", "count", "calls that still succeed in each process before the errors start"),
         Param("rate", "number", "share of allocations that fail (oom only; above 0, at most 1)", above=0.0))),
    FaultSpec(
        "model_load_stall", ModelLoadStall,
        "the model-store route stalls, is throttled or delayed, then `replicas` replicas are crashed so their "
        "replacements must load their weights through it",
        "the model-store route (every replica that (re)loads while it holds) and " + RADIUS_REPLICAS,
        (REPLICAS,
         Param("stall_s", "seconds", "seconds the store stalls from injection; inf = until revert", allow_inf=True),
         Param("bandwidth_kbs", "number", "bandwidth limit per connection in KB/s; none = unlimited",
               above=0.0, nullable=True),
         Param("latency_ms", "ms", "milliseconds added to every response from the store"),
         WARM_POOL, PROVISIONING)),
    FaultSpec(
        "pipeline_lag", PipelineLag,
        "the feature pipeline stops (SIGSTOP) and/or feature-store reads get slower than the server's "
        "feature timeout; answers keep coming with stale features",
        "the feature pipeline and/or the feature-store route: the features of every replica; no replica is "
        "stopped",
        (Param("mode", "choice", "stop: the pipeline stops; slow_reads: reads get slow; both", choices=MODES),
         Param("read_latency_ms", "ms", "milliseconds added to each feature read (slow_reads, both)"))),
    FaultSpec(
        "dependency_latency", DependencyLatency,
        "latency, jitter, a bandwidth limit, a stall or resets on the path from the replicas to a store",
        "the route to one dependency, as every replica sees it; the store itself stays healthy",
        (Param("dependency", "choice", "which route: model_store or feature_store", choices=DEPENDENCIES),
         Param("latency_ms", "ms", "milliseconds added to each response"),
         Param("jitter_ms", "ms", "random +- milliseconds on top of latency_ms"),
         Param("bandwidth_kbs", "number", "bandwidth limit per connection in KB/s; none = unlimited",
               above=0.0, nullable=True),
         Param("stall_s", "seconds", "seconds the route stalls from injection (0: no stall; inf: until revert)",
               allow_inf=True),
         Param("reset", "bool", "reset connections (true) instead of passing them"))),
    FaultSpec(
        "replica_crash", ReplicaCrash,
        "SIGKILL, no notice: a segfault, a kernel OOM kill, a lost node; the supervisor replaces it after the "
        "provisioning delay",
        RADIUS_REPLICAS,
        (REPLICAS, PROVISIONING)),
    FaultSpec(
        "replica_hang", ReplicaHang,
        "SIGSTOP until revert (then SIGCONT): the socket stays open, only the health check's timeout ejects it",
        RADIUS_REPLICAS,
        (REPLICAS,)),
    FaultSpec(
        "traffic_surge", TrafficSurge,
        "a second locust adds (factor - 1) x the experiment's users for the fault window: the flash sale",
        "the whole endpoint: every replica sees the extra load; nothing is stopped",
        (Param("factor", "number", "load multiplier over the experiment's own users", above=1.0),
         Param("spawn_rate", "number", "users the surge starts per second", above=0.0)),
        standalone_refusal="traffic_surge runs only inside an experiment (it multiplies the experiment's own "
                           "load): run `pytest experiments/test_traffic_surge.py`"),
    FaultSpec(
        "autoscaled_surge", AutoscaledSurge,
        "the cluster autoscales on queue length (KEDA's semantics) from `min_replicas`, optionally with a warm "
        "pool or a pre-heat; then the load jumps `factor`-fold: does capacity arrive in time?",
        "the whole cluster: its replica count follows the autoscaler between min and max; nothing is stopped",
        (Param("factor", "number", "load multiplier over the experiment's own users", above=1.0),
         Param("target_waiting", "number", "summed vllm:num_requests_waiting per replica to aim at", above=0.0),
         Param("min_replicas", "count", "fewest replicas"), Param("max_replicas", "count", "most replicas"),
         Param("cooldown_s", "seconds", "scale-down stabilisation"), WARM_POOL,
         Param("preheat", "count", "replicas held ready before the surge (0: none)"),
         Param("autoscaler", "bool", "false: the same surge with scaling off (the planted breach)"),
         Param("provisioning_delay_s", "seconds", "seconds before a new replica starts")),
        standalone_refusal="autoscaled_surge runs only inside an experiment (it multiplies the experiment's own "
                           "load): run `pytest experiments/test_autoscaled_surge.py`"),
    FaultSpec(
        "wrong_answers", WrongAnswers,
        "a replica keeps answering 200 OK, fast and well-formed, with numbers that are off (noise of `sigma` "
        "on the log-probabilities): silent data corruption",
        RADIUS_REPLICAS,
        (REPLICAS, Param("sigma", "number", "noise on the log-probabilities (above 0)", above=0.0))),
)}


def lookup(fault_id: str) -> FaultSpec:
    try:
        return CATALOGUE[fault_id]
    except KeyError:
        raise UsageError(f"unknown fault {fault_id!r}{_suggest(fault_id, list(CATALOGUE))}; "
                         f"known: {', '.join(CATALOGUE)} (`inferchaos faults` describes them)") from None


def constructor_params(cls: type[Fault]) -> set[str]:
    """A fault class's own parameters: its init fields, less the bookkeeping every fault has."""
    return {f.name for f in dataclasses.fields(cls) if f.init} - {"ledger", "experiment", "target"}
