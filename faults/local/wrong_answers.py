"""Wrong answers: a replica keeps answering 200 OK with well-formed outputs, but the
numbers are off (noise of `sigma` on the log-probabilities).

What silent data corruption on a GPU, a bad quantisation or a half-applied weight update
look like from outside: every uptime check passes. Only the model-health probes (the
golden-set canary, prediction drift) can tell, and this fault is how they are tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from inferchaos.faults.base import Landing
from inferchaos.faults.local.base import LocalFault
from inferchaos.faults.registry import executes
from inferchaos.targets.local.golden import check_answer, golden_set, infer_body
from inferchaos.faults.undo import process_ref, step
from inferchaos.targets.local.server import PERTURB_PATH


@executes("wrong_answers", "local")
@dataclass
class WrongAnswers(LocalFault):
    """Noise of `sigma` on each victim's log-probabilities, through the reference server's
    own perturbation endpoint; exact again on revert."""

    def _plan(self) -> list[str]:
        return [f"perturb the infer outputs of {v.name} (port {v.port}, slot r{v.slot}) with sigma {self.args.sigma:g}; "
                "exact again on revert" for v in self.choose()]

    def _inject(self) -> None:
        self.victims = self._victims_or_fail()
        mark = self.cluster.state.mark
        self.journal([step("clear_perturbation", state_dir=str(self.cluster.state_dir), **process_ref(v.pid, mark),
                           what=f"replica {v.name}") for v in self.victims])
        for v in self.victims:
            resp = httpx.put(f"http://127.0.0.1:{v.port}{PERTURB_PATH}", json={"sigma": self.args.sigma}, timeout=5)
            resp.raise_for_status()
            self.note("perturbing", v.name)

    def landed(self) -> Landing:
        """Answers perturbed: a golden-set case asked of each victim directly no longer
        gets the expected answer (judged by the canary's own check)."""
        if not self.victims:
            return Landing(False, "no replica was chosen")
        case, seen = golden_set()[0], []
        for v in self.victims:
            resp = httpx.post(f"http://127.0.0.1:{v.port}/v2/models/mlp/infer", json=infer_body(case), timeout=5)
            if resp.status_code == 200 and check_answer(case, resp.json()).ok:
                return Landing(False, f"{v.name} still answers the golden case {case.name!r} right")
            seen.append(f"{v.name} answers the golden case {case.name!r} wrong (HTTP {resp.status_code})")
        return Landing(True, "; ".join(seen))
