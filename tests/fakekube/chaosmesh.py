"""Chaos Mesh's controller manager, modelled on the fake's store: what a NetworkChaos (and an
IOChaos / PodChaos) does to the pods it names, so a test can tell a fault that really landed
from one that only exists as an object.

    with FakeKube() as fake, ChaosMeshController(fake) as chaos:
        ...create a NetworkChaos through CustomObjectsApi...
        wait_for(lambda: chaos.injected(ns, name) == {f"{ns}/web-1"})
        assert chaos.effects_on(ns, "web-1")[0]["action"] == "delay"

Read from github.com/chaos-mesh/chaos-mesh (master, 2026-08):
- api/v1alpha1/selector.go, common_types.go, networkchaos_types.go, podnetworkchaos_types.go
  (TcParameter), iochaos_types.go, podchaos_types.go: the field names.
- config/crd/bases/chaos-mesh.org_{networkchaos,iochaos,podchaos}.yaml: what the API server's
  schema refuses (422) — enums, required fields, minimums, the delay pattern.
- api/genericwebhook/{validater,bfs}.go, api/v1alpha1/common_webhook.go,
  networkchaos_webhook.go, iochaos_webhook.go, podchaos_webhook.go: what the validating
  webhook refuses (403, "admission webhook \"vnetworkchaos.kb.io\" denied the request: ...";
  the 403/Forbidden comes from controller-runtime pkg/webhook/admission/response.go Denied).
- pkg/selector/pod/selector.go, pkg/selector/generic/{mode.go,label,field,namespace,annotation},
  pkg/selector/pod/{node_selector,phase_selector}.go, pkg/selector/container/selector.go:
  selection. NOT filtered by phase or readiness: `all` takes "not ready or not running pods"
  too (selector.go); a non-Running pod is selected and then fails to inject ("pod not running",
  controllers/chaosimpl/networkchaos/podnetworkchaosmanager), leaving it stuck (chaos-mesh#4476).
- controllers/common/records/controller.go: targets are selected once, when
  status.experiment.containerRecords is nil; "TODO: dynamic upgrade the records" — pods created
  later are never added (chaos-mesh#1338), a deleted pod's record stays. With nothing selected it
  records nothing (a "Failed to select targets" event) and tries again only when the object is
  reconciled again.
- controllers/common/condition/controller.go: Selected = records exist; AllInjected / AllRecovered
  = records exist and every one is Injected / "Not Injected"; Paused = the pause annotation.
- controllers/common/desiredphase/controller.go, zz_generated.chaosmesh.go DurationExceeded:
  desiredPhase Stop once creationTimestamp + duration has passed (the object stays), while paused,
  or once deleted; PodChaos pod-kill / container-kill are one-shot (always Run).
- controllers/chaosimpl/networkchaos/trafficcontrol/impl.go: Apply goes "Not Injected" →
  "Not Injected/Wait" → "Injected" once chaos-daemon has synced; Recover goes "Injected" →
  "Injected/Wait" → "Not Injected", or straight to "Not Injected" when the pod is gone.
- controllers/common/finalizers/controller.go: finalizer chaos-mesh/records, removed once every
  record is "Not Injected" (or the cleanFinalizer=forced annotation).

The fake's store cannot refuse a create on a controller's behalf, so `admission()` / `review()`
are the stand-in for the API server's schema check and Chaos Mesh's validating webhook, for the
apiserver to call on create later. Until that is wired, the controller treats an object
`review()` refuses as never admitted: no selection, no injection, its conditions all False with
reason "Invalid", and a Warning event carrying the refusal.
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from tests.fakekube.apiserver import FakeKube
from tests.fakekube.controller import Controller
from tests.fakekube.selectors import Requirement
from tests.fakekube.store import NotFound, Resource

GROUP, VERSION = "chaos-mesh.org", "v1alpha1"
KINDS: dict[str, str] = {"networkchaos": "NetworkChaos", "iochaos": "IOChaos", "podchaos": "PodChaos"}
PLURALS = {kind: plural for plural, kind in KINDS.items()}
MODES = ("one", "all", "fixed", "fixed-percent", "random-max-percent")
ACTIONS: dict[str, tuple[str, ...]] = {
    "NetworkChaos": ("netem", "delay", "loss", "duplicate", "corrupt", "partition", "bandwidth"),
    "IOChaos": ("latency", "fault", "attrOverride", "mistake"),
    "PodChaos": ("pod-kill", "pod-failure", "container-kill"),
}
SPEC_REQUIRED: dict[str, tuple[str, ...]] = {
    "NetworkChaos": ("action", "mode", "selector"),
    "IOChaos": ("action", "mode", "selector", "volumePath"),
    "PodChaos": ("action", "mode", "selector"),
}
#: TcParameter (podnetworkchaos_types.go): the blocks a NetworkChaos action reads.
TC_BLOCKS = ("delay", "loss", "duplicate", "corrupt", "bandwidth", "rate")
IO_FIELDS = ("delay", "errno", "attr", "mistake", "path", "methods", "percent", "volumePath")

INJECTED, NOT_INJECTED = "Injected", "Not Injected"
APPLY_WAIT, RECOVER_WAIT = "Not Injected/Wait", "Injected/Wait"
RUN, STOP = "Run", "Stop"
FINALIZER = "chaos-mesh/records"
PAUSE = "experiment.chaos-mesh.org/pause"
CLEAN_FINALIZER = "chaos-mesh.chaos-mesh.org/cleanFinalizer"
MAX_EVENTS = 100  # pkg/config/controller.go MaxEvents default
CONDITIONS = ("Selected", "AllInjected", "AllRecovered", "Paused")
POD = ("", "v1", "pods")


# ---------------------------------------------------------------------------------- Go parsing

def go_quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str) -> float:
    """Seconds, as Go's time.ParseDuration reads it (the webhook's Duration check); ValueError
    carries Go's message ("time: unknown unit ..." / "missing unit" / "invalid duration")."""
    s, total = text, 0.0
    if s[:1] in ("+", "-"):
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {go_quote(text)}")
    while s:
        m = re.match(r"(\d*)(?:\.(\d*))?", s)
        assert m is not None
        if not m.group(0) or m.group(0) == ".":
            raise ValueError(f"time: invalid duration {go_quote(text)}")
        number = float(f"{m.group(1) or '0'}.{m.group(2) or '0'}")
        s = s[m.end():]
        unit = re.match(r"[^\d.]*", s).group(0)  # type: ignore[union-attr]
        if not unit:
            raise ValueError(f"time: missing unit in duration {go_quote(text)}")
        if unit not in _DURATION_UNITS:
            raise ValueError(f"time: unknown unit {go_quote(unit)} in duration {go_quote(text)}")
        total += number * _DURATION_UNITS[unit]
        s = s[len(unit):]
    return -total if text.startswith("-") else total


def _go_atoi(text: str) -> int:
    if not re.fullmatch(r"[+-]?\d+", text):
        raise ValueError(f"strconv.Atoi: parsing {go_quote(text)}: invalid syntax")
    return int(text)


def _go_parse_uint(text: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise ValueError(f"strconv.ParseUint: parsing {go_quote(text)}: invalid syntax")
    return int(text)


def _go_parse_float(text: str) -> float:
    if not text or text != text.strip() or "_" in text:
        raise ValueError(f"strconv.ParseFloat: parsing {go_quote(text)}: invalid syntax")
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"strconv.ParseFloat: parsing {go_quote(text)}: invalid syntax") from None


def _rate_unit_error(rate: str) -> str | None:
    """isValidRateUnit (networkchaos_webhook.go): a known unit suffix, an unsigned integer before it."""
    s = rate.strip().lower()
    for unit in ("kbit", "mbit", "gbit", "tbit", "tbps", "gbps", "mbps", "kbps", "bps", "bit"):
        if s.endswith(unit):
            try:
                _go_parse_uint(s[: -len(unit)].strip())
            except ValueError as exc:
                return str(exc)
            return None
    return "invalid unit"


# ---------------------------------------------------------------------------------- admission

def _render(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return go_quote(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value)


def _invalid(path: str, value: Any, detail: str) -> str:
    return f"{path}: Invalid value: {_render(value)}: {detail}"


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "null"


@dataclass(frozen=True)
class Refusal:
    """How the API server answers a refused create: 422 Invalid for the CRD schema, 403 Forbidden
    for the validating webhook (schema validation runs first)."""

    code: int
    reason: str
    message: str
    causes: tuple[str, ...] = ()


class _Schema:
    """The structural checks the CRD's openAPIV3Schema makes (messages as kube-apiserver words them)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def required(self, block: dict[str, Any], path: str, *names: str) -> None:
        for name in names:
            if name not in block:
                self.errors.append(f"{path}.{name}: Required value")

    def typed(self, block: dict[str, Any], path: str, name: str, want: str) -> bool:
        if name not in block:
            return False
        got = _json_type(block[name])
        ok = got == want or (want == "number" and got == "integer")
        if not ok:
            detail = f"{path}.{name} in body must be of type {want}: {go_quote(got)}"
            self.errors.append(_invalid(f"{path}.{name}", got, detail))
        return ok

    def enum(self, block: dict[str, Any], path: str, name: str, allowed: tuple[str, ...]) -> None:
        if self.typed(block, path, name, "string") and block[name] not in allowed:
            supported = ", ".join(go_quote(a) for a in allowed)
            self.errors.append(f"{path}.{name}: Unsupported value: {go_quote(block[name])}: "
                               f"supported values: {supported}")

    def minimum(self, block: dict[str, Any], path: str, name: str, low: int) -> None:
        if self.typed(block, path, name, "integer") and block[name] < low:
            self.errors.append(_invalid(f"{path}.{name}", block[name],
                                        f"{path}.{name} in body should be greater than or equal to {low}"))

    def pattern(self, block: dict[str, Any], path: str, name: str, regex: str) -> None:
        if self.typed(block, path, name, "string") and not re.search(regex, block[name]):
            self.errors.append(_invalid(f"{path}.{name}", block[name], f"{path}.{name} in body should match '{regex}'"))

    def block(self, spec: dict[str, Any], path: str, name: str) -> dict[str, Any] | None:
        if name in spec and self.typed(spec, path, name, "object"):
            return spec[name]
        return None

    def selector(self, spec: dict[str, Any], path: str) -> None:
        """A PodSelector's schema: mode enum, value a string, expressionSelectors need key+operator."""
        self.enum(spec, path, "mode", MODES)
        self.typed(spec, path, "value", "string")
        sel = self.block(spec, path, "selector")
        for i, expr in enumerate((sel or {}).get("expressionSelectors") or []):
            self.required(expr, f"{path}.selector.expressionSelectors[{i}]", "key", "operator")


_DELAY_PATTERN = r"^[0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h)$"


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """What the CRD's schema refuses (config/crd/bases/chaos-mesh.org_*.yaml)."""
    kind = obj.get("kind", "")
    check = _Schema()
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return ["spec: Required value"]
    check.required(spec, "spec", *SPEC_REQUIRED.get(kind, ()))
    check.enum(spec, "spec", "action", ACTIONS.get(kind, ()))
    check.selector(spec, "spec")
    check.typed(spec, "spec", "duration", "string")
    if kind == "NetworkChaos":
        check.enum(spec, "spec", "direction", ("to", "from", "both"))
        if (delay := check.block(spec, "spec", "delay")) is not None:
            check.required(delay, "spec.delay", "latency")
            check.pattern(delay, "spec.delay", "latency", _DELAY_PATTERN)
            check.pattern(delay, "spec.delay", "jitter", _DELAY_PATTERN)
            if (reorder := check.block(delay, "spec.delay", "reorder")) is not None:
                check.required(reorder, "spec.delay.reorder", "gap", "reorder")
        for name in ("loss", "duplicate", "corrupt"):
            if (b := check.block(spec, "spec", name)) is not None:
                check.required(b, f"spec.{name}", name)
        if (bw := check.block(spec, "spec", "bandwidth")) is not None:
            check.required(bw, "spec.bandwidth", "buffer", "limit", "rate")
            check.typed(bw, "spec.bandwidth", "rate", "string")
            for name, low in (("buffer", 1), ("limit", 1), ("peakrate", 0), ("minburst", 0)):
                check.minimum(bw, "spec.bandwidth", name, low)
        if (rate := check.block(spec, "spec", "rate")) is not None:
            check.required(rate, "spec.rate", "rate")
        if (target := check.block(spec, "spec", "target")) is not None:
            check.required(target, "spec.target", "mode", "selector")
            check.selector(target, "spec.target")
    elif kind == "PodChaos":
        check.minimum(spec, "spec", "gracePeriod", 0)
    elif kind == "IOChaos" and (mistake := check.block(spec, "spec", "mistake")) is not None:
        check.enum(mistake, "spec.mistake", "filling", ("zero", "random"))
        check.minimum(mistake, "spec.mistake", "maxLength", 1)
        check.minimum(mistake, "spec.mistake", "maxOccurrences", 1)
    return check.errors


def defaulted(obj: dict[str, Any]) -> dict[str, Any]:
    """The mutating webhook (genericwebhook Default): selector.namespaces defaults to the object's
    namespace (PodSelector.Default), direction to "to", delay jitter "0ms", correlations "0",
    device loses an "@..." suffix (NetworkChaosSpec.Default)."""
    obj = copy.deepcopy(obj)
    spec = obj.get("spec") or {}
    namespace = (obj.get("metadata") or {}).get("namespace", "")
    for ps in (spec, spec.get("target")):
        if isinstance(ps, dict) and isinstance(ps.get("selector"), dict) and not ps["selector"].get("namespaces"):
            ps["selector"]["namespaces"] = [namespace]
    if obj.get("kind") == "NetworkChaos":
        if not spec.get("direction"):
            spec["direction"] = "to"
        if isinstance(spec.get("device"), str) and "@" in spec["device"]:
            spec["device"] = spec["device"].split("@", 1)[0]
        if isinstance(spec.get("delay"), dict):
            delay = spec["delay"]
            delay["jitter"] = delay.get("jitter") or "0ms"
            delay["correlation"] = delay.get("correlation") or "0"
            if isinstance(delay.get("reorder"), dict):
                delay["reorder"]["correlation"] = delay["reorder"].get("correlation") or "0"
        for name in ("loss", "duplicate", "corrupt"):
            if isinstance(spec.get(name), dict):
                spec[name]["correlation"] = spec[name].get("correlation") or "0"
    return obj


def _pod_selector_errors(ps: dict[str, Any], path: str) -> list[str]:
    """PodSelector.Validate (common_webhook.go): `value` only matters for the fixed / percent modes."""
    mode, value = ps.get("mode"), str(ps.get("value") or "")
    where = f"{path}.value"
    if mode == "fixed":
        try:
            if _go_atoi(value) <= 0:
                return [_invalid(where, value, "value must be greater than 0 with mode:fixed")]
        except ValueError as exc:
            return [_invalid(where, value, f"parse value field error:{exc}")]
    elif mode in ("fixed-percent", "random-max-percent"):
        try:
            percent = _go_atoi(value)
        except ValueError as exc:
            return [_invalid(where, value, f"parse value field error:{exc}")]
        if percent <= 0 or percent > 100:
            return [_invalid(where, value, f"value of {percent} is invalid, Must be (0,100] with mode:{mode}")]
    return []


def _duration_error(value: Any, path: str) -> list[str]:
    if not isinstance(value, str) or not value:
        return []
    try:
        parse_go_duration(value)
    except ValueError as exc:
        return [_invalid(path, value, f"parse duration field error: {exc}")]
    return []


def _float_error(value: Any, path: str) -> list[str]:
    if not isinstance(value, str):
        return []
    try:
        _go_parse_float(value)
    except ValueError as exc:
        return [_invalid(path, value, f"parse correlation field error:{exc}")]
    return []


def _network_webhook(spec: dict[str, Any]) -> list[str]:
    """In genericwebhook's breadth-first order over the Go struct (paths are Go field names)."""
    errs: list[str] = []
    action, direction = spec.get("action"), spec.get("direction")
    target, external = spec.get("target"), spec.get("externalTargets")
    if action != "partition":  # NetworkChaosSpec.Validate
        if direction in ("from", "both") and external is not None:
            errs.append(_invalid("Spec.direction", direction,
                                 "external targets cannot be used with `from` and `both` direction "
                                 "in netem action yet"))
        if direction in ("from", "both") and target is None:
            errs.append(_invalid("Spec.direction", direction,
                                 "`from` and `both` direction cannot be used when targets is empty in netem action"))
    errs += _pod_selector_errors(spec, "Spec.PodSelector")
    errs += _duration_error(spec.get("duration"), "Spec.Duration")
    if isinstance(target, dict):
        errs += _pod_selector_errors(target, "Spec.Target")
    delay = spec.get("delay") if isinstance(spec.get("delay"), dict) else None
    if delay is not None:
        errs += _duration_error(delay.get("latency"), "Spec.TcParameter.Delay.Latency")
        errs += _float_error(delay.get("correlation"), "Spec.TcParameter.Delay.Correlation")
        errs += _duration_error(delay.get("jitter"), "Spec.TcParameter.Delay.Jitter")
    for name, go in (("loss", "Loss"), ("duplicate", "Duplicate"), ("corrupt", "Corrupt")):
        if isinstance(spec.get(name), dict):
            errs += _float_error(spec[name].get(name), f"Spec.TcParameter.{go}.{go}")
            errs += _float_error(spec[name].get("correlation"), f"Spec.TcParameter.{go}.Correlation")
    for name, go in (("bandwidth", "Bandwidth"), ("rate", "Rate")):
        if isinstance(spec.get(name), dict) and isinstance(spec[name].get("rate", ""), str):
            rate = spec[name].get("rate", "")
            if (problem := _rate_unit_error(rate)) is not None:
                errs.append(_invalid(f"Spec.TcParameter.{go}.Rate", rate, f"parse rate field error:{problem}"))
    if delay is not None and isinstance(delay.get("reorder"), dict):
        errs += _float_error(delay["reorder"].get("reorder"), "Spec.TcParameter.Delay.Reorder.Reorder")
        errs += _float_error(delay["reorder"].get("correlation"), "Spec.TcParameter.Delay.Reorder.Correlation")
    return errs


def webhook_errors(obj: dict[str, Any]) -> list[str]:
    """What Chaos Mesh's validating webhook refuses, on the defaulted object (mutating runs first)."""
    obj = defaulted(obj)
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind == "NetworkChaos":
        return _network_webhook(spec)
    errs: list[str] = []
    if kind == "PodChaos":
        if spec.get("action") == "container-kill" and not spec.get("containerNames"):
            errs.append(_invalid("Spec.containerNames", spec.get("containerNames"),
                                 "the name of container is required on container-kill action: invalid value"))
        errs += _duration_error(spec.get("duration"), "Spec.Duration")
    elif kind == "IOChaos":
        errs += _duration_error(spec.get("delay"), "Spec.Delay")
        if spec.get("action") == "fault" and not spec.get("errno"):
            errs.append(_invalid("Spec.Errno", spec.get("errno", 0), "action fault: errno 0 is not supported"))
        percent = spec.get("percent", 0)
        if isinstance(percent, int) and not 0 <= percent <= 100:
            errs.append(_invalid("Spec.Percent", percent, "percent field should be in 0-100"))
        errs += _duration_error(spec.get("duration"), "Spec.Duration")
    errs += _pod_selector_errors(spec, "Spec.ContainerSelector.PodSelector")
    return errs


def review(obj: dict[str, Any]) -> Refusal | None:
    """The create as the API server would answer it: None when admitted."""
    kind = obj.get("kind", "")
    name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get("generateName", "")
    if kind not in PLURALS:
        return None
    if errs := schema_errors(obj):
        detail = errs[0] if len(errs) == 1 else f"[{', '.join(errs)}]"
        return Refusal(422, "Invalid", f"{kind}.{GROUP} {go_quote(name)} is invalid: {detail}", tuple(errs))
    if errs := webhook_errors(obj):
        detail = errs[0] if len(errs) == 1 else f"[{', '.join(errs)}]"  # field.ErrorList.ToAggregate()
        return Refusal(403, "Forbidden",
                       f"admission webhook {go_quote(f'v{PLURALS[kind]}.kb.io')} denied the request: {detail}",
                       tuple(errs))
    return None


def admission(obj: dict[str, Any]) -> str | None:
    """The refusal's message, or None when the create would be admitted."""
    refused = review(obj)
    return refused.message if refused else None


def validate(obj: dict[str, Any]) -> list[str]:
    """Every field error, schema first, then the webhook's."""
    return schema_errors(obj) or webhook_errors(obj)


def admission_update(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """ValidateUpdate (zz_generated.chaosmesh.go): a chaos's spec cannot change once created."""
    if defaulted(old).get("spec") != defaulted(new).get("spec"):
        return (f"admission webhook {go_quote('v' + PLURALS.get(new.get('kind', ''), '') + '.kb.io')} "
                "denied the request: Cannot update chaos spec")
    return admission(new)


# ---------------------------------------------------------------------------------- selection

class SelectError(Exception):
    """Selection failed: the records controller records a "Failed to select targets" event."""


def filter_by_mode(mode: str, value: str, count: int, rng: random.Random) -> list[int]:
    """generic.FilterObjectsByMode (pkg/selector/generic/mode.go), errors included."""
    if count == 0:
        raise SelectError("cannot generate objects from empty list")

    def sample(num: int) -> list[int]:  # RandomFixedIndexes
        return list(range(count)) if num > count else rng.sample(range(count), num)

    def atoi() -> int:
        try:
            return _go_atoi(value)
        except ValueError as exc:
            raise SelectError(str(exc)) from None

    if mode == "one":
        return [rng.randrange(count)]
    if mode == "all":
        return list(range(count))
    if mode == "fixed":
        num = min(atoi(), count)
        if num <= 0:
            raise SelectError("cannot select any object as value below or equal 0")
        return sample(num)
    if mode in ("fixed-percent", "random-max-percent"):
        percent = atoi()
        if percent == 0:
            raise SelectError("cannot select any object as value below or equal 0")
        if percent < 0 or percent > 100:
            raise SelectError(f"fixed percentage value of {percent} is invalid, Must be (0,100]")
        if mode == "random-max-percent":
            percent = rng.randrange(percent + 1)  # may be 0: then nothing is selected
        return sample(math.ceil(count * percent / 100))
    raise SelectError(f"mode {mode} not supported")


_POD_FIELDS = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
               "status.phase", "status.podIP", "status.nominatedNodeName", "metadata.name", "metadata.namespace")


def _pod_fields(pod: dict[str, Any]) -> dict[str, str]:
    """toPodSelectableFields (pkg/selector/generic/field/selector.go)."""
    spec, status, meta = pod.get("spec") or {}, pod.get("status") or {}, pod.get("metadata") or {}
    ips = status.get("podIPs") or ([{"ip": status["podIP"]}] if status.get("podIP") else [])
    return {"spec.nodeName": spec.get("nodeName", ""), "spec.restartPolicy": spec.get("restartPolicy", ""),
            "spec.schedulerName": spec.get("schedulerName", ""),
            "spec.serviceAccountName": spec.get("serviceAccountName", ""),
            "status.phase": status.get("phase", ""), "status.podIP": ips[0]["ip"] if ips else "",
            "status.nominatedNodeName": status.get("nominatedNodeName", ""),
            "metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}


_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}


class _Selection:
    """One PodSelectorSpec resolved against the store, now."""

    def __init__(self, fake: FakeKube) -> None:
        self.store = fake.store
        self.pods = self.store.resource(*POD)

    def _labels(self, sel: dict[str, Any]) -> list[Requirement]:
        reqs = [Requirement(k, "=", frozenset([v])) for k, v in (sel.get("labelSelectors") or {}).items()]
        for expr in sel.get("expressionSelectors") or []:
            op = _OPERATORS.get(expr.get("operator", ""))
            values = frozenset(expr.get("values") or [])
            if op is None:
                raise SelectError(f'{go_quote(expr.get("operator", ""))} is not a valid label selector operator')
            if op in ("in", "notin") and not values:
                raise SelectError("values: Invalid value: []string(nil): for 'in', 'notin' operators, "
                                  "values set can't be empty")
            reqs.append(Requirement(expr["key"], op, values))
        return reqs

    def _nodes(self, sel: dict[str, Any]) -> set[str] | None:
        """node_selector.go: Nodes (each must exist) and NodeSelectors combined; None = no filter."""
        if not sel.get("nodes") and not sel.get("nodeSelectors"):
            return None
        node_res = self.store.resource("", "v1", "nodes")
        names = set()
        for name in sel.get("nodes") or []:
            try:
                self.store.get(node_res, "", name)
            except NotFound as exc:
                raise SelectError(str(exc)) from None
            names.add(name)
        if want := sel.get("nodeSelectors"):
            items, _ = self.store.list(node_res, None)
            names |= {n["metadata"]["name"] for n in items
                      if all((n["metadata"].get("labels") or {}).get(k) == v for k, v in want.items())}
        return names

    def matching(self, sel: dict[str, Any]) -> list[dict[str, Any]]:
        """SelectPods: the `pods` map wins outright (each named pod that exists, any phase);
        otherwise namespaces + labels + expressions + fields + annotations + nodes + phases."""
        if sel.get("pods"):
            found = []
            for ns, names in sel["pods"].items():
                for name in names:
                    try:
                        found.append(self.store.get(self.pods, ns, name))
                    except NotFound:
                        continue  # "pod is not found, skip it"
            return found
        labels = self._labels(sel)
        fields = sel.get("fieldSelectors") or {}
        for key in fields:
            if key not in _POD_FIELDS:
                raise SelectError(f'field label not supported: {key}')
        annotations = sel.get("annotationSelectors") or {}
        nodes = self._nodes(sel)
        phases = sel.get("podPhaseSelectors") or []
        include = {p for p in phases if not p.startswith("!")}
        exclude = {p[1:] for p in phases if p.startswith("!")}

        def keep(pod: dict[str, Any]) -> bool:
            meta = pod.get("metadata") or {}
            pod_labels, pod_annotations = meta.get("labels") or {}, meta.get("annotations") or {}
            phase = (pod.get("status") or {}).get("phase", "")
            podf = _pod_fields(pod)
            return (all(r.matches(pod_labels) for r in labels)
                    and all(podf.get(k, "") == v for k, v in fields.items())
                    and all(pod_annotations.get(k) == v for k, v in annotations.items())
                    and (nodes is None or (pod.get("spec") or {}).get("nodeName") in nodes)
                    and (not include or phase in include) and phase not in exclude)

        found = []
        for ns in sel.get("namespaces") or [None]:
            items, _ = self.store.list(self.pods, ns)
            found += [p for p in items if keep(p)]
        return found


@dataclass(frozen=True)
class Target:
    """One record's object: a pod ("ns/pod") or a container ("ns/pod/container")."""

    id: str
    namespace: str
    pod: str


def _container_selector(kind: str, spec: dict[str, Any]) -> bool:
    return kind == "IOChaos" or (kind == "PodChaos" and spec.get("action") == "container-kill")


# ---------------------------------------------------------------------------------- the controller

def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()


@dataclass
class _Memory:
    """What chaos-daemon knows and the status does not: when a Wait began, which pod incarnation
    (uid) got the rules, the resourceVersion a failed selection was last tried at."""

    wait_since: dict[str, float] = field(default_factory=dict)
    pod_uid: dict[str, str] = field(default_factory=dict)
    selected_at_rv: str | None = None
    commits: dict[str, int] = field(default_factory=dict)  # PodNetworkChaos generation per record
    failures: dict[str, int] = field(default_factory=dict)
    retry_at: dict[str, float] = field(default_factory=dict)

    def backoff(self, rid: str) -> None:
        """A failed Apply / Recover is requeued with controller-runtime's per-item exponential
        backoff (5 ms doubling); capped at 1 s here, where the real one grows to 1000 s."""
        n = self.failures[rid] = self.failures.get(rid, 0) + 1
        self.retry_at[rid] = time.monotonic() + min(0.005 * 2 ** n, 1.0)


class ChaosMeshController(Controller):
    """Reconciles NetworkChaos, IOChaos and PodChaos objects in the fake's store, as Chaos Mesh's
    records / desiredphase / condition / finalizer controllers together would.

    injection_delay_s: how long a record sits in "Not Injected/Wait" (and "Injected/Wait") before
    chaos-daemon has synced it. rng: for modes one / fixed / *-percent."""

    def __init__(self, fake: FakeKube, injection_delay_s: float = 0.3, tick_s: float = 0.05,
                 rng: random.Random | None = None, finalizers: bool = True) -> None:
        super().__init__(fake, tick_s)
        self.thread_name = "fake-chaos-mesh"
        self.injection_delay_s = injection_delay_s
        self.rng = rng or random.Random()
        self.finalizers = finalizers
        self.selection = _Selection(fake)
        self._memory: dict[str, _Memory] = {}
        self._refused: dict[tuple[str, str, str], str] = {}
        self._events: dict[tuple[str, str, str], str] = {}  # (uid, reason, message) -> Event name
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ChaosMeshController:
        """Also installs Chaos Mesh's admission (the CRD schema, its webhook) on the server's creates."""
        self.fake.admission.append(review)
        return super().start()

    def stop(self) -> None:
        if review in self.fake.admission:
            self.fake.admission.remove(review)
        super().stop()

    # stand-ins for admission, for the apiserver to call
    admission = staticmethod(admission)
    review = staticmethod(review)
    validate = staticmethod(validate)

    # ------------------------------------------------------------------ what tests read
    def chaos(self, namespace: str, name: str, plural: str = "networkchaos") -> dict[str, Any]:
        return self.store.get(self._resource(plural), namespace, name)

    def refused(self, namespace: str, name: str, plural: str = "networkchaos") -> str | None:
        """The admission stand-in's message for an object it treats as never admitted."""
        with self._lock:
            return self._refused.get((plural, namespace, name))

    def injected(self, namespace: str, name: str, plural: str = "networkchaos") -> set[str]:
        """Record ids ("ns/pod", or "ns/pod/container") that are Injected on the pod that is
        there now (the same uid that got the rules)."""
        try:
            obj = self.chaos(namespace, name, plural)
        except NotFound:
            return set()
        memory = self._memory_of(obj)
        return {r["id"] for r in _records(obj) if r["phase"] in (INJECTED, RECOVER_WAIT)
                and self._alive(r["id"], memory)}

    def effects_on(self, namespace: str, pod: str) -> list[dict[str, Any]]:
        """Every chaos action in force on this pod now: {"kind", "chaos": "ns/name", "action",
        "id", plus the spec blocks the action reads (delay / loss / bandwidth ..., direction,
        externalTargets for NetworkChaos)}. A NetworkChaos puts tc rules on the source pods for
        direction to / both, and on the target pods for from / both (trafficcontrol/impl.go)."""
        effects = []
        for plural in KINDS:
            items, _ = self.store.list(self._resource(plural), None)
            for obj in items:
                memory = self._memory_of(obj)
                spec = defaulted(obj).get("spec") or {}
                for r in _records(obj):
                    target = _target(r["id"])
                    if (target.namespace, target.pod) != (namespace, pod) or r["phase"] not in (INJECTED, RECOVER_WAIT):
                        continue
                    if not self._alive(r["id"], memory) or not _has_rules(obj["kind"], spec, r["selectorKey"]):
                        continue
                    effects.append(_effect(obj, spec, r["id"]))
        return effects

    # ------------------------------------------------------------------ the loop
    def tick(self) -> None:
        self.reconcile_all()

    def reconcile_all(self) -> None:
        for plural in KINDS:
            items, _ = self.store.list(self._resource(plural), None)
            for obj in items:
                try:
                    self.reconcile(plural, obj)
                except NotFound:
                    continue  # deleted under us

    def reconcile(self, plural: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        ns, name = meta.get("namespace", ""), meta["name"]
        if (message := admission(obj)) is not None:
            self._refuse(plural, obj, message)
            return
        memory = self._memory_of(obj)
        spec = defaulted(obj)["spec"]
        status = copy.deepcopy(obj.get("status") or {})
        experiment = status.setdefault("experiment", {})
        desired = self._desired_phase(obj, spec)
        if experiment.get("desiredPhase") != desired:
            self._event(obj, "Normal", *_phase_event(obj, desired))
        experiment["desiredPhase"] = desired

        records = experiment.get("containerRecords")
        if records is None and memory.selected_at_rv != meta["resourceVersion"]:
            memory.selected_at_rv = meta["resourceVersion"]
            records = self._select(obj, spec)
            if records is not None:
                experiment["containerRecords"] = records
        for record in records or []:
            self._step(obj, spec, record, desired, memory)
        if plural == "networkchaos" and memory.commits:
            status["instances"] = dict(memory.commits)
        status["conditions"] = _conditions(records, _paused(obj))

        finalizers = list(meta.get("finalizers") or [])
        deleting = bool(meta.get("deletionTimestamp"))
        if self.finalizers and not deleting and FINALIZER not in finalizers:
            finalizers.append(FINALIZER)
        resumed = all(r["phase"] == NOT_INJECTED for r in records or [])
        if deleting and finalizers and (resumed or (meta.get("annotations") or {}).get(CLEAN_FINALIZER) == "forced"):
            finalizers = []
        if status != (obj.get("status") or {}) or finalizers != list(meta.get("finalizers") or []):
            def change(current: dict[str, Any]) -> dict[str, Any]:
                current["status"] = status
                current["metadata"]["finalizers"] = finalizers
                return current

            self.store.update(self._resource(plural), ns, name, change)
        if deleting and not finalizers:
            # The API server removes an object whose deletion waits on no finalizer; the fake's
            # store may not, so do it here (a no-op once the store does it itself).
            try:
                self.store.delete(self._resource(plural), ns, name)
            except NotFound:
                pass

    # ------------------------------------------------------------------ pieces
    def _resource(self, plural: str) -> Resource:
        return self.store.resource(GROUP, VERSION, plural, KINDS[plural])

    def _memory_of(self, obj: dict[str, Any]) -> _Memory:
        with self._lock:
            return self._memory.setdefault(obj["metadata"]["uid"], _Memory())

    def _alive(self, record_id: str, memory: _Memory) -> bool:
        target = _target(record_id)
        try:
            pod = self.store.get(self.selection.pods, target.namespace, target.pod)
        except NotFound:
            return False
        return memory.pod_uid.get(record_id) in (None, pod["metadata"]["uid"])

    def _refuse(self, plural: str, obj: dict[str, Any], message: str) -> None:
        meta = obj["metadata"]
        key = (plural, meta.get("namespace", ""), meta["name"])
        with self._lock:
            if self._refused.get(key) == message:
                return
            self._refused[key] = message
        self._event(obj, "Warning", "Invalid", message)
        conditions = [{"type": t, "status": "False", "reason": "Invalid"} for t in CONDITIONS]

        def change(current: dict[str, Any]) -> dict[str, Any]:
            current["status"] = {"experiment": {}, "conditions": conditions}
            return current

        self.store.update(self._resource(plural), key[1], key[2], change)

    def _desired_phase(self, obj: dict[str, Any], spec: dict[str, Any]) -> str:
        """desiredphase/controller.go CalcDesiredPhase."""
        if obj["metadata"].get("deletionTimestamp"):
            return STOP
        if obj["kind"] == "PodChaos" and spec.get("action") in ("pod-kill", "container-kill"):
            return RUN  # IsOneShot
        if isinstance(spec.get("duration"), str) and spec["duration"]:
            try:
                seconds = parse_go_duration(spec["duration"])
            except ValueError:
                seconds = None  # "failed to parse duration": treated as no duration
            created = _parse_iso(obj["metadata"]["creationTimestamp"])
            if seconds is not None and created + seconds < time.time():
                return STOP
        return STOP if _paused(obj) else RUN

    def _select(self, obj: dict[str, Any], spec: dict[str, Any]) -> list[dict[str, Any]] | None:
        """records/controller.go: every selector must pick something, else no records at all."""
        selectors = {".": spec}
        if obj["kind"] == "NetworkChaos" and isinstance(spec.get("target"), dict):
            selectors[".Target"] = spec["target"]
        records = []
        for key, ps in selectors.items():
            try:
                pods = self.selection.matching(ps.get("selector") or {})
                if not pods:
                    raise SelectError("no pod is selected")
                chosen = [pods[i] for i in filter_by_mode(ps.get("mode", ""), str(ps.get("value") or ""),
                                                          len(pods), self.rng)]
            except SelectError as exc:
                self._event(obj, "Warning", "Failed", f"Failed to select targets: {exc}")
                return None
            targets = self._targets(obj["kind"], ps, chosen)
            if not targets:
                self._event(obj, "Warning", "Failed", "Failed to select targets: no target has been selected")
                return None
            records += [{"id": t.id, "selectorKey": key, "phase": NOT_INJECTED,
                         "injectedCount": 0, "recoveredCount": 0} for t in targets]
        return records

    @staticmethod
    def _targets(kind: str, ps: dict[str, Any], pods: list[dict[str, Any]]) -> list[Target]:
        out = []
        for pod in pods:
            ns, name = pod["metadata"].get("namespace", ""), pod["metadata"]["name"]
            if not _container_selector(kind, ps):
                out.append(Target(f"{ns}/{name}", ns, name))
                continue
            containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
            wanted = ps.get("containerNames") or []
            names = containers[:1] if not wanted else [c for c in containers if c in wanted]
            out += [Target(f"{ns}/{name}/{c}", ns, name) for c in names]
        return out

    def _step(self, obj: dict[str, Any], spec: dict[str, Any], record: dict[str, Any], desired: str,
              memory: _Memory) -> None:
        """One record toward the desired phase (records/controller.go + trafficcontrol/impl.go)."""
        phase, rid = record["phase"], record["id"]
        if time.monotonic() < memory.retry_at.get(rid, 0.0):
            return
        if desired == RUN and phase != INJECTED:
            if phase.startswith(NOT_INJECTED):
                self._apply(obj, spec, record, memory)
            else:
                self._recover(obj, record, memory)
        elif desired == STOP and phase != NOT_INJECTED:
            if phase.startswith(NOT_INJECTED):  # "Not Injected/Wait": finish applying first
                self._apply(obj, spec, record, memory)
            else:
                self._recover(obj, record, memory)
        if record["phase"] != phase:
            memory.wait_since.pop(rid, None)
            if record["phase"] in (APPLY_WAIT, RECOVER_WAIT):
                memory.wait_since[rid] = time.monotonic()

    def _pod(self, record_id: str) -> dict[str, Any] | None:
        target = _target(record_id)
        try:
            return self.store.get(self.selection.pods, target.namespace, target.pod)
        except NotFound:
            return None

    def _apply(self, obj: dict[str, Any], spec: dict[str, Any], record: dict[str, Any], memory: _Memory) -> None:
        rid, kind = record["id"], obj["kind"]
        pod = self._pod(rid)
        if record["phase"] == APPLY_WAIT:
            if pod is None or pod["metadata"]["uid"] != memory.pod_uid.get(rid):
                record["phase"] = NOT_INJECTED  # its PodNetworkChaos went with the pod
            elif time.monotonic() - memory.wait_since.get(rid, 0.0) >= self.injection_delay_s:
                self._succeeded(obj, record, "Apply")
            return
        if pod is None:
            target = _target(rid)
            return self._failed(obj, record, "Apply", f'pods "{target.pod}" not found')
        memory.pod_uid[rid] = pod["metadata"]["uid"]
        if kind == "PodChaos":
            if spec.get("action") == "pod-kill":  # podkill/impl.go: Delete with spec.gracePeriod (default 0)
                self._delete_pod(pod, int(spec.get("gracePeriod") or 0))
            return self._succeeded(obj, record, "Apply")
        if not _has_rules(kind, spec, record["selectorKey"]):
            return self._succeeded(obj, record, "Apply")  # a target that needs no rules of its own
        if (pod.get("status") or {}).get("phase") != "Running":
            return self._failed(obj, record, "Apply", "pod not running")
        memory.commits[rid] = memory.commits.get(rid, 0) + 1
        record["phase"] = APPLY_WAIT
        memory.wait_since[rid] = time.monotonic()

    def _delete_pod(self, pod: dict[str, Any], grace: int) -> None:
        ns, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        graceful = getattr(self.store, "delete_gracefully", None)  # the store's graceful DELETE, when it has one
        if graceful is not None:
            graceful(self.selection.pods, ns, name, grace)
        else:
            self.store.delete(self.selection.pods, ns, name)

    def _recover(self, obj: dict[str, Any], record: dict[str, Any], memory: _Memory) -> None:
        rid = record["id"]
        pod = self._pod(rid)
        gone = pod is None or pod["metadata"]["uid"] != memory.pod_uid.get(rid, pod["metadata"]["uid"])
        if record["phase"] == RECOVER_WAIT:
            if gone or time.monotonic() - memory.wait_since.get(rid, 0.0) >= self.injection_delay_s:
                self._succeeded(obj, record, "Recover")
            return
        spec = defaulted(obj)["spec"]
        if (gone or obj["kind"] == "PodChaos" or not _has_rules(obj["kind"], spec, record["selectorKey"])
                or (pod or {}).get("status", {}).get("phase") != "Running"):
            return self._succeeded(obj, record, "Recover")  # ErrPodNotFound / ErrPodNotRunning: nothing to undo
        memory.commits[rid] = memory.commits.get(rid, 0) + 1
        record["phase"] = RECOVER_WAIT
        memory.wait_since[rid] = time.monotonic()

    def _succeeded(self, obj: dict[str, Any], record: dict[str, Any], operation: str) -> None:
        memory = self._memory_of(obj)
        memory.failures.pop(record["id"], None)
        memory.retry_at.pop(record["id"], None)
        if operation == "Apply":
            record["phase"] = INJECTED
            record["injectedCount"] = record.get("injectedCount", 0) + 1
            self._event(obj, "Normal", "Applied", f"Successfully apply chaos for {record['id']}")
        else:
            record["phase"] = NOT_INJECTED
            record["recoveredCount"] = record.get("recoveredCount", 0) + 1
            self._event(obj, "Normal", "Recovered", f"Successfully recover chaos for {record['id']}")
        _record_event(record, {"type": "Succeeded", "operation": operation, "timestamp": _now_iso()})

    def _failed(self, obj: dict[str, Any], record: dict[str, Any], operation: str, message: str) -> None:
        self._memory_of(obj).backoff(record["id"])
        events = record.get("events") or []
        if not events or events[-1].get("message") != message:  # the real one appends on every retry
            _record_event(record, {"type": "Failed", "operation": operation, "message": message,
                                   "timestamp": _now_iso()})
        activity = "apply chaos" if operation == "Apply" else "recover chaos"
        self._event(obj, "Warning", "Failed", f"Failed to {activity}: {message}")

    def _event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the chaos object (controllers/utils/recorder); repeats bump `count`."""
        meta = obj["metadata"]
        ns = meta.get("namespace", "")
        events = self.store.resource("", "v1", "events")
        key = (meta["uid"], reason, message)
        now = _now_iso()
        with self._lock:
            name = self._events.get(key)
        if name is not None:
            try:
                self.store.update(events, ns, name,
                                  lambda e: {**e, "count": e.get("count", 1) + 1, "lastTimestamp": now})
                return
            except NotFound:
                pass
        name = f"{meta['name']}.{uuid.uuid4().hex[:16]}"
        self.store.create(events, ns, {
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {"apiVersion": f"{GROUP}/{VERSION}", "kind": obj["kind"], "name": meta["name"],
                               "namespace": ns, "uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": now, "lastTimestamp": now})
        with self._lock:
            self._events[key] = name


# ---------------------------------------------------------------------------------- helpers

def _records(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return ((obj.get("status") or {}).get("experiment") or {}).get("containerRecords") or []


def _target(record_id: str) -> Target:
    ns, pod = record_id.split("/")[:2]
    return Target(record_id, ns, pod)


def _paused(obj: dict[str, Any]) -> bool:
    return (obj["metadata"].get("annotations") or {}).get(PAUSE) == "true"


def _conditions(records: list[dict[str, Any]] | None, paused: bool) -> list[dict[str, str]]:
    """condition/controller.go diffConditions."""
    def status(ok: bool) -> str:
        return "True" if ok else "False"

    selected = records is not None
    return [{"type": "Selected", "status": status(selected)},
            {"type": "AllInjected", "status": status(selected and all(r["phase"] == INJECTED for r in records or []))},
            {"type": "AllRecovered",
             "status": status(selected and all(r["phase"] == NOT_INJECTED for r in records or []))},
            {"type": "Paused", "status": status(paused)}]


def _record_event(record: dict[str, Any], event: dict[str, Any]) -> None:
    events = record.setdefault("events", [])
    events.append(event)
    del events[:-MAX_EVENTS]


def _has_rules(kind: str, spec: dict[str, Any], selector_key: str) -> bool:
    """Whether this record's pod gets rules of its own: NetworkChaos sources for to / both,
    targets for from / both (partition likewise); IOChaos and PodChaos always."""
    if kind != "NetworkChaos":
        return True
    direction = spec.get("direction") or "to"
    return direction in ("to", "both") if selector_key == "." else direction in ("from", "both")


def _phase_event(obj: dict[str, Any], desired: str) -> tuple[str, str]:
    if desired == RUN:
        return "Started", "Experiment has started"
    if obj["metadata"].get("deletionTimestamp"):
        return "Deleted", "Experiment has been deleted"
    return ("Paused", "Experiment has been paused") if _paused(obj) else ("TimeUp", "Time up according to the duration")


def _effect(obj: dict[str, Any], spec: dict[str, Any], record_id: str) -> dict[str, Any]:
    meta = obj["metadata"]
    effect: dict[str, Any] = {"kind": obj["kind"], "chaos": f"{meta.get('namespace', '')}/{meta['name']}",
                              "action": spec.get("action"), "id": record_id}
    if obj["kind"] == "NetworkChaos":
        keys: tuple[str, ...] = TC_BLOCKS + ("direction", "device", "externalTargets")
    elif obj["kind"] == "IOChaos":
        keys = IO_FIELDS
    else:
        keys = ("gracePeriod",)
    effect.update({k: copy.deepcopy(spec[k]) for k in keys if k in spec})
    if obj["kind"] == "NetworkChaos" and isinstance(spec.get("target"), dict):
        effect["target"] = copy.deepcopy(spec["target"])
    return effect
