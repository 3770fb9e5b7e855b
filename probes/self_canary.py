"""A golden set for any server: its own baseline answers are the expected ones.

The reference model's golden set is known in advance; a server of yours (vLLM, MLServer,
Triton behind `--replica-cmd`, or a Kubernetes endpoint) has none we could know. What it
answered to a fixed input before the fault is what it must answer after: a fixed tensor
(seeded from the model's own metadata) through OIP, a fixed prompt at temperature 0 through
OpenAI. The canary asks one case every `interval_s` through every phase; until `freeze()`
(the engine calls it at injection) answers become the references, after it they are
judged against them. A case whose baseline answers already disagreed is dropped from the
judgement and named: that server is not deterministic for it, and a verdict on it would lie.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass

import httpx

from inferchaos.load.records import REPLICA_HEADER, parse_completion_body
from inferchaos.load.workload import Workload
from inferchaos.probes.canary import Canary, Check

CASES = 4
RTOL, ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: dict


def cases(workload: Workload, n: int = CASES) -> list[Case]:
    """Fixed requests the workload's server understands: the same every run."""
    out = []
    active = {k for k, w in workload.mix.items() if w}
    kinds = [k for k, uses in (("infer", {"infer"}), ("completion", {"completion", "stream"}),
                               ("chat", {"chat", "chat_stream"})) if active & uses]
    for i in range(n):
        kind = kinds[i % len(kinds)]
        if kind == "infer":
            rng = random.Random(1000 + i)
            body = {"id": f"golden-{i}", "inputs": [s.tensor(rng) for s in workload.inputs]}
            out.append(Case(f"self-{i}", workload.infer_path, body))
        else:
            prompt = workload.prompts[i % len(workload.prompts)]
            body = {"model": workload.model, "max_tokens": workload.max_tokens, "temperature": 0, "stream": False}
            body.update({"messages": [{"role": "user", "content": prompt}]} if kind == "chat" else {"prompt": prompt})
            out.append(Case(f"self-{i}", "/v1/chat/completions" if kind == "chat" else "/v1/completions", body))
    return out


class SelfCanary(Canary):
    """The canary's loop (`Canary.start/stop`), with references learnt from the baseline."""

    def __init__(self, base_url: str, workload: Workload, interval_s: float = 0.25, timeout_s: float = 5.0) -> None:
        super().__init__(base_url, cases(workload), workload.model, interval_s, timeout_s,
                         headers=workload.header_values())
        self._seen: dict[str, Counter[str]] = defaultdict(Counter)
        self._values: dict[str, list[float] | str] = {}
        self._frozen = False

    def freeze(self) -> None:
        """From now on, answers are judged against what came before."""
        self._frozen = True

    @property
    def unstable(self) -> list[str]:
        return sorted(name for name, seen in self._seen.items() if len(seen) > 1)

    def check(self, case: Case) -> Check:
        t = time.monotonic()
        try:
            resp = self._client.post(case.path, json=case.body)
        except httpx.HTTPError as exc:
            return Check(t, case.name, False, False, None, f"no answer: {type(exc).__name__}")
        replica = resp.headers.get(REPLICA_HEADER)
        answer = _answer(case, resp.content) if resp.status_code == 200 else None
        if answer is None:
            return Check(t, case.name, False, False, replica, f"HTTP {resp.status_code}, no valid answer")
        if not self._frozen:
            key = answer if isinstance(answer, str) else json.dumps([round(x, 4) for x in answer])
            self._seen[case.name][key] += 1
            self._values.setdefault(case.name, answer)
            return Check(t, case.name, True, True, replica, "baseline answer (the reference)")
        if case.name not in self._values:
            return Check(t, case.name, False, False, replica, "no baseline answer to compare with")
        if case.name in self.unstable:
            return Check(t, case.name, False, False, replica, "the baseline's answers to it differed")
        ok, detail = _compare(self._values[case.name], answer, replica)
        return Check(t, case.name, True, ok, replica, detail)


def _answer(case: Case, body: bytes) -> list[float] | str | None:
    if case.path.endswith("/infer"):
        try:
            data = json.loads(body)["outputs"][0]["data"]
            return [float(x) for x in data]
        except (ValueError, KeyError, IndexError, TypeError):
            return None
    error, text = parse_completion_body(body, chat=case.path.endswith("chat/completions"))
    return None if error else text


def _compare(expected: list[float] | str, got: list[float] | str, replica: str | None) -> tuple[bool, str]:
    where = f" (replica {replica})" if replica else ""
    if isinstance(expected, str) or isinstance(got, str):
        if expected == got:
            return True, "same text as the baseline"
        return False, f"text differs from the baseline's{where}: {str(got)[:40]!r} != {str(expected)[:40]!r}"
    if len(expected) != len(got):
        return False, f"{len(got)} outputs, the baseline had {len(expected)}{where}"
    for k, (e, g) in enumerate(zip(expected, got)):
        if abs(g - e) > ATOL + RTOL * abs(e):
            return False, f"output[{k}] {g:.4g} != baseline {e:.4g}{where}"
    return True, "same outputs as the baseline"

