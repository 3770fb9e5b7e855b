"""The catalogue's crash, hang and spot experiments against servers we did not write: three
replicas of vLLM's CPU build and three of MLServer behind the suite's HAProxy, driven by
`pytest experiments/ --replica-cmd ...` exactly as a user would run it on one box.

What it shows: the workload is learnt from the server (no 404s: the baseline is valid),
the token-level measures come from a real stream, and every verdict is a pass or a fail
for a reason the report names (behind HAProxy's defaults the hang breaches p99_ms). The
figures land in .inferchaos/test-artifacts/real-servers-<server>.json for the README.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.faultcases import repo_env
from tests.support.leftovers import processes_mentioning
from tests.servers import SERVERS
from tests.support.inner import PYTEST

pytestmark = [pytest.mark.cluster, pytest.mark.thirdparty]

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".inferchaos" / "test-artifacts"
EXPERIMENTS = ["experiments/test_replica_crash.py", "experiments/test_replica_hang.py",
               "experiments/test_spot_reclamation.py"]
#: the load each takes on this 2-core machine beside the suite (req/s, open loop).
RATES = {"vllm": 20, "mlserver": 50}
#: Objectives a server cannot meet by design. vLLM's CPU build is not batch-invariant
#: (docs.vllm.ai features/batch_invariance: GPUs only): at temperature 0 a greedy answer
#: depends on the batch it ran in, and a failover changes the batches, so one answer in a
#: few hundred takes another path (CI saw 327 of 328; the tiny random model has near-tied
#: logits). Lost or doubled tokens would still show: 0.98 is six answers in 300.
OBJECTIVES = {"vllm": ["stream_integrity=0.98"], "mlserver": []}
BASELINE_S = 8
EXPECTED = {"replica_crash": "pass", "replica_hang[plain]": "fail", "spot_reclamation": "pass"}


@pytest.fixture(scope="module", params=list(SERVERS))
def catalogue(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    server = SERVERS[request.param]
    reason = server.available()
    if reason:
        pytest.skip(reason)
    server.prepare()
    out = tmp_path_factory.mktemp(f"real-{server.name}")
    argv = [*PYTEST, *EXPERIMENTS, "-q", "--replica-cmd", server.replica_cmd(), "--ready-path", server.ready_path, "--api", server.api,
            "--model", server.model_name, "--load-rate", str(RATES[server.name]),
            # a baseline judged at >= 99% needs more than 100 requests: at 20/s, 8 s of it
            "--slo-set", f"baseline_s={BASELINE_S}",
            *(arg for o in OBJECTIVES[server.name] for arg in ("--slo-set", o)),
            "--chaos-report", str(out / "report"), "--ledger", str(out / "ledger.jsonl")]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=900, cwd=REPO, env=repo_env())
    # 1: an experiment failed (the tuned hang may, below); anything else is not a verdict
    assert res.returncode in (0, 1), res.stdout[-6000:] + res.stderr[-3000:]
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert processes_mentioning(str(server.model_dir)) == [], "a replica outlived its cluster"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / f"real-servers-{server.name}.json").write_text(json.dumps(figures(summary), indent=2))
    return server.name, summary


def figures(summary: dict) -> dict:
    keys = ("p99_ms", "failover_s", "ttft_p99_ms", "itl_p99_ms", "tpot_p99_ms", "goodput_rps", "stream_integrity")
    return {e["id"]: {"verdict": e["verdict"], "baseline": e["baseline"], "load": e["load"]["describe"],
                      **{k: e["observed"].get(k) for k in keys},
                      "breached": [s["name"] for s in e["slos"] if not s["ok"]]} for e in summary["experiments"]}


def evidence(runs: dict[str, dict]) -> dict[str, tuple]:
    """Each run's verdict with what decided it: a verdict alone cannot be diagnosed from CI's log."""
    return {k: (r["verdict"], r.get("error"), r.get("landing"),
                [f"{s['name']} {s['objective']}: {s['detail']}" for s in r["slos"] if not s["ok"]])
            for k, r in runs.items()}


def by_id(summary: dict) -> dict[str, dict]:
    return {e["id"]: e for e in summary["experiments"]}


def test_every_verdict_is_what_the_fleet_earned_for_a_reason_it_names(catalogue):
    name, summary = catalogue
    runs = by_id(summary)
    assert {k: runs[k]["verdict"] for k in EXPECTED} == EXPECTED, evidence(runs)
    for run in runs.values():
        for slo in run["slos"]:
            assert slo["detail"], slo
        assert run["error"] is None
    plain = {s["name"]: s for s in runs["replica_hang[plain]"]["slos"]}
    assert not plain["p99_ms"]["ok"] and plain["p99_ms"]["observed"] > 2000, plain["p99_ms"]
    assert_tuned_hang_earned(runs["replica_hang[tuned]"])
    # the tuned LB ejected the hung replica; both killed ones were taken out too
    for run in ("replica_crash", "replica_hang[tuned]", "spot_reclamation"):
        assert runs[run]["failover"] and runs[run]["observed"]["failover_s"] <= 8, runs[run]["failover"]


def assert_tuned_hang_earned(run: dict) -> None:
    """Behind the tuned LB the hung replica is ejected in about two seconds, and the
    requests already sent to it wait the whole hold: at vLLM's 20 req/s two of the ~120 in
    the fault window are 1.7%, past p99's rank, so p99 breaches; one is 0.8%, and it does
    not. Either verdict is earned; what must hold is that nothing else broke and that every
    request slower than the bound was sent to the hung replica before it was ejected."""
    breached = {s["name"] for s in run["slos"] if not s["ok"]}
    assert run["verdict"] in ("pass", "fail") and breached <= {"p99_ms", "goodput_rps"}, (run["verdict"], breached)
    if not breached:
        return
    (p99,) = [s for s in run["slos"] if s["name"] == "p99_ms"]
    bound = float(p99["objective"].split()[1])
    (failover,) = run["failover"]
    t0 = run["clock"]["t0_monotonic"]
    ejected = t0 + failover["ejected_at"]
    inject = t0 + next(p for p in run["phases"] if p["name"] == "inject")["start_s"]
    records = [json.loads(line) for line in Path(run["request_log"]).read_text().splitlines() if line.strip()]
    slow = [r for r in records if r["start"] + r["latency_s"] > inject and r["latency_s"] * 1000 > bound]
    assert slow and all(r["start"] <= ejected + 0.5 for r in slow), (failover, [(r["start"] - inject, r["latency_s"])
                                                                            for r in slow])


def test_the_workload_came_from_the_server_and_the_baseline_is_valid(catalogue):
    name, summary = catalogue
    server = SERVERS[name]
    for run in summary["experiments"]:
        assert f"model '{server.model_name}'" in run["load"]["workload"], run["load"]
        assert run["load"]["mode"] == "open"
        base = run["baseline"]
        assert base["requests"] >= 20 and base["availability"] >= 0.99, (run["id"], base)


def test_token_level_measures_come_from_real_streams(catalogue):
    name, summary = catalogue
    if SERVERS[name].api != "openai":
        pytest.skip(f"{name} speaks OIP: no streams")
    for run in summary["experiments"]:
        seen = run["observed"]
        for key in ("ttft_p99_ms", "itl_p99_ms", "tpot_p99_ms", "output_tokens_per_s", "goodput_rps"):
            assert seen.get(key) is not None and seen[key] > 0, (run["id"], key, seen)
        # temperature 0: what survived the fault says what the baseline said, within what
        # the server's batching allows (OBJECTIVES)
        (integrity,) = [s for s in run["slos"] if s["name"] == "stream_integrity"]
        assert run["integrity"]["judged"] > 0 and integrity["ok"], (run["id"], run["integrity"], integrity)
