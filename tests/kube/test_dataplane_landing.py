"""A Kubernetes fault lands when its effect shows in the data plane, not when its mechanism
reports success.

Against the project's fake cluster (tests/support/kubestage.py), whose pods are real
processes listening on their own pod IPs: a hang lands when the victim's process is in
state T *and* the victim's address (from the Service's EndpointSlice) answers nothing while
a peer answers. The planted no-op is a server shaped like gunicorn or uvicorn with workers:
the outermost process (what --server-process matches first) only waits while a forked
child serves; stopping it reads back as state T, and the pod keeps answering, so the fault
must not be called landed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inferchaos.faults.catalogue import lookup
from inferchaos.faults.ledger import Ledger
from inferchaos.targets.kubernetes import KubeSettings, KubeTarget
from inferchaos.targets.kubernetes.dataplane import ask
from tests.support.kubestage import NS, staged_kube
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster


def target_of(fake, tmp: Path) -> KubeTarget:  # type: ignore[no-untyped-def]
    settings = KubeSettings(NS, "app=ref", "http://ref:8000", kubeconfig=str(fake.kubeconfig),
                            allow_clusters=(fake.uid,), allow_namespaces=(NS,), server_process="container_server.py",
                            service="ref")
    target = KubeTarget(settings).start().tie()
    target.wait_steady(20)
    wait_for(lambda: all(target.address_of(p.name) for p in target.replicas()), 10, "every pod in the slices")
    return target


def hang_until_landed_or(target: KubeTarget, tmp: Path, seconds: float):  # type: ignore[no-untyped-def]
    hang = lookup("replica_hang").on(target, ledger=Ledger(tmp / "ledger.jsonl"))
    hang.inject()
    landing = None
    try:
        def check() -> bool:
            nonlocal landing
            landing = hang.landed()
            return landing.ok
        try:
            wait_for(check, seconds, "the hang's landing")
        except AssertionError:
            pass
        victim = hang.victims[0].name
        peer = next(p.name for p in target.replicas() if p.name != victim)
        during = (ask(victim, *target.address_of(victim)), ask(peer, *target.address_of(peer)))
    finally:
        hang.revert()
    assert hang.ledger.open_entries() == []
    return landing, victim, during


def test_a_hang_lands_when_the_pod_falls_silent_and_its_peers_answer(tmp_path):
    with staged_kube(tmp_path) as fake:
        target = target_of(fake, tmp_path)
        try:
            landing, victim, (victim_reply, peer_reply) = hang_until_landed_or(target, tmp_path, 20)
            # what the test reads itself, beside what the executor said
            assert not victim_reply.answered and peer_reply.answered, (victim_reply, peer_reply)
            assert landing is not None and landing.ok, landing
            assert "state T" in landing.evidence and f"{victim} at 127.100." in landing.evidence
            assert "no answer in 2 s" in landing.evidence and "while " in landing.evidence, landing.evidence
            wait_for(lambda: target.unsteady() is None, 20, "the resumed pod Ready again")
            assert ask(victim, *target.address_of(victim)).answered, "resumed: it answers again"
        finally:
            target.close()


def test_a_stopped_master_whose_worker_still_serves_is_not_landed(tmp_path):
    with staged_kube(tmp_path, server_args=("--fork-worker",)) as fake:
        target = target_of(fake, tmp_path)
        try:
            landing, victim, (victim_reply, _) = hang_until_landed_or(target, tmp_path, 14)
            assert victim_reply.answered, "the planted no-op: the worker kept serving"
            assert landing is not None and not landing.ok, landing
            assert "state T" in landing.evidence and "the pod still answers" in landing.evidence, landing.evidence
        finally:
            target.close()


def test_a_runner_that_cannot_reach_pod_ips_cannot_call_a_hang_landed(tmp_path, monkeypatch):
    """From a laptop through a port-forward the pod IPs are out of reach: the victim's silence
    proves nothing, since its peers are silent too."""
    with staged_kube(tmp_path) as fake:
        target = target_of(fake, tmp_path)
        try:
            real = target.address_of
            monkeypatch.setattr(target, "address_of", lambda pod: ("192.0.2.1", real(pod)[1]))  # TEST-NET-1
            landing, _, _ = hang_until_landed_or(target, tmp_path, 8)
            assert landing is not None and not landing.ok, landing
            assert "cannot be read" in landing.evidence and "no peer answered either" in landing.evidence, landing
        finally:
            target.close()


def test_a_crash_lands_with_its_process_gone_and_the_slices_say_when_it_went_out(tmp_path):
    with staged_kube(tmp_path) as fake:
        target = target_of(fake, tmp_path)
        try:
            crash = lookup("replica_crash").on(target, ledger=Ledger(tmp_path / "crash.jsonl"))
            crash.inject()
            victim = crash.victims[0].name
            landing = wait_for(lambda: (lambda l: l if l.ok else None)(crash.landed()), 20, "the crash's landing")
            crash.revert()
            pid = crash.procs[victim].pid
            assert f"{victim} (restartCount 0 -> 1; process {pid} gone; out of the Service's slices" in \
                landing.evidence, landing.evidence
            out = target.went_out_at(victim)
            assert out is not None and out >= crash._died[victim] - 0.5
            wait_for(lambda: target.unsteady() is None, 20, "the restarted pod Ready again")
        finally:
            target.close()
