"""`inject --for` on Kubernetes counts from the landing, and the cluster's own expiry of the
change (the backstop for a machine gone) does not end it first.

A slow landing, for real: the fake Chaos Mesh takes `injection_delay_s` to inject a
NetworkChaos (its daemon syncing), so `inject` reads AllInjected back only after that. The
local-cluster counterpart is in tests/cluster/test_operator_cli.py (`..._counts_from_the_landing_...`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from inferchaos.faults.ledger import Ledger
from tests.support.waiting import wait_for
from tests.fakekube import FakeKube
from tests.fakekube.chaosmesh import ChaosMeshController
from tests.support.kubeseed import CONTEXT, NS, kubeconfig, seed
from tests.support.leftovers import processes_mentioning

REPO = Path(__file__).resolve().parents[2]
#: the fake Chaos Mesh daemon's sync: the landing comes this long after the NetworkChaos is created, later
#: than --for plus the time a timer takes to revert, so a countdown from the start ends it before it lands.
INJECTION_DELAY_S = 5.0


@pytest.fixture
def kube() -> Iterator[tuple[FakeKube, ChaosMeshController]]:
    with FakeKube() as fake, ChaosMeshController(fake, injection_delay_s=INJECTION_DELAY_S) as chaos:
        yield fake, chaos


def chaos_objects(fake: FakeKube) -> list[dict]:
    resource = fake.store.resource("chaos-mesh.org", "v1alpha1", "networkchaos")
    return fake.store.list(resource, NS, lambda o: True)[0]


def all_injected(obj: dict) -> bool:
    return any(c.get("type") == "AllInjected" and c.get("status") == "True"
               for c in (obj.get("status") or {}).get("conditions") or [])


def test_a_slow_landing_on_kubernetes_stays_for_the_full_duration_after_it(kube, tmp_path):
    fake, _ = kube
    uid = seed(fake, {"node-a": ["web-0"], "node-b": ["web-1"]})
    ledger = tmp_path / "ledger.jsonl"
    for_s = 2
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferchaos.cli", "inject", "dependency_latency", "dependency=model_store",
         "latency_ms=200", "--for", f"{for_s}s", "--target", "kubernetes",
         "--kubeconfig", str(kubeconfig(fake, tmp_path)), "--kube-context", CONTEXT, "--allow-cluster", uid, "--namespace", NS, "--allow-namespace", NS,
         "--selector", "app=ref", "--dependency", "model_store=model-store.ml.svc", "--ledger", str(ledger)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    try:
        # watched from here, as Chaos Mesh reports it: injected (AllInjected) at, in force (not deleted) until
        injected_at = last_in_force = None
        durations = set()
        while time.monotonic() - t0 < 60:
            now = time.monotonic()
            objs = chaos_objects(fake)
            durations |= {o["spec"]["duration"] for o in objs}
            if injected_at is None and any(all_injected(o) for o in objs):
                injected_at = now
            if injected_at is not None:
                if not any(not o["metadata"].get("deletionTimestamp") for o in objs):
                    break
                last_in_force = now
            time.sleep(0.05)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, out + err
    assert "landed: NetworkChaos" in out and "AllInjected" in out, out
    assert injected_at is not None and last_in_force is not None, "never injected, or never deleted"
    assert injected_at - t0 >= INJECTION_DELAY_S > for_s, "the landing took longer than --for itself"
    # in force the full --for after it landed (less the poll intervals: the inject's 0.1 s, ours 0.05 s)
    assert last_in_force - injected_at >= for_s - 0.3, (injected_at, last_in_force)
    entry_id = re.search(r"ledger id ([0-9a-f]{12})", out).group(1)  # type: ignore[union-attr]
    # the timer's own account, on the same monotonic clock: it counted from the landing
    log = (ledger.parent / f"timer-{entry_id}.log").read_text()
    m = re.search(rf"counting {for_s} s from monotonic ([0-9.]+) \(it landed\)", log)
    assert m, log
    assert injected_at - 0.1 <= float(m.group(1)) <= last_in_force - for_s + 0.1, (injected_at, m.group(1))
    # the cluster's expiry leaves room for the landing (15 s for a NetworkChaos): it cannot beat the timer
    assert durations == {f"{for_s + 15}s"}, durations
    wait_for(lambda: not Ledger(ledger).open_entries(), 10, "the timer to close the entry")
    assert [e for e in Ledger(ledger).entries() if e.id == entry_id][-1].event == "reverted"
    wait_for(lambda: chaos_objects(fake) == [], 10, "the NetworkChaos recovered and gone")
    wait_for(lambda: processes_mentioning(f"revert {entry_id}") == [], 10, "the timer to exit")
