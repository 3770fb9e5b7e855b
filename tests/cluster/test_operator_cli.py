"""The operator's verbs on a real local cluster: `faults`, `plan`, `inject`, `revert`, `watch`.

`inject` runs in its own process and exits with the fault applied (a game day's way of
working); each fault's effect is then measured on the target, and `revert` must leave
the cluster exactly as before (replicas, memory, proxy routes, pipeline, answers, LB).
`watch` is checked against what the test itself sent and saw.
"""

from __future__ import annotations

import inspect
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from inferchaos.faults.catalogue import CATALOGUE, lookup
from inferchaos.faults.registry import executor_class, kinds_of
from inferchaos.faults.spec import TARGET_KINDS
from inferchaos.faults.ledger import Ledger
from inferchaos.load.records import read_log
from inferchaos.load.runner import free_port
from inferchaos.ground.errors import UsageError
from inferchaos.plugin import FAULT_MARKERS
from inferchaos.watch import between, frontend_counters, take, watch
from inferchaos.targets.local import ClusterSpec, LocalCluster
from tests.support.waiting import wait_for
from inferchaos.targets.local.control import read_desired
from inferchaos.targets.local.depproxy import ProxyControl
from inferchaos.targets.local.processes import group_alive, pid_alive, stopped
from inferchaos.targets.local.state import ClusterState, write_state
from inferchaos.targets.local.vgpu import VirtualDevice
from tests.support.faultcases import CLEAN_TOXICS, answers_right, clean_snapshot, infer, snapshot, store_feature_age
from tests.support.leftovers import module_cluster, processes_mentioning
from tests.support.cli import inferchaos, one_line

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- the catalogue (no cluster)
def test_every_spec_is_complete_and_has_an_executor():
    assert set(CATALOGUE) == set(FAULT_MARKERS), "one pytest marker per spec"
    for spec in CATALOGUE.values():
        assert spec.summary and spec.marker and spec.blast_radius and spec.effect, spec.name
        assert all(p.meaning for p in spec.params), spec.name
        assert kinds_of(spec.name), f"{spec.name}: no executor on any target"
        for p in spec.params:
            assert p.only in (None, *TARGET_KINDS) and set(p.defaults) <= set(TARGET_KINDS), (spec.name, p.name)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_each_executor_reads_only_the_parameters_its_spec_gives_that_target(name):
    """Read from the executors' source: a parameter an executor reads that the spec does not
    give its target would be an AttributeError on a path the tests might not take."""
    spec = CATALOGUE[name]
    for kind in kinds_of(name):
        cls = executor_class(name, kind)
        given = set(spec.defaults(kind))
        for klass in cls.__mro__:
            if klass.__module__.startswith("inferchaos.faults."):
                read = set(re.findall(r"self\.args\.(\w+)", inspect.getsource(klass)))
                assert read <= given | {"get"}, f"{name} on {kind}: {klass.__name__} reads {sorted(read - given)}"


def test_defaults_are_the_specs_and_differ_per_target_only_where_declared():
    spot = lookup("spot_reclamation")
    assert spot.defaults("local") == {"replicas": "1", "notice_s": 2.0, "provisioning_delay_s": None,
                                      "warm_pool": None}
    assert spot.defaults("kubernetes") == {"replicas": "1", "notice_s": 30.0}
    assert "device" in lookup("gpu_oom").defaults("kubernetes") and "device" not in lookup("gpu_oom").defaults("local")
    res = inferchaos("faults", "spot_reclamation")
    assert res.returncode == 0, res.stderr
    assert "default on local: 2.0; kubernetes: 30.0" in res.stdout, res.stdout
    assert "targets:      local, kubernetes" in res.stdout
    gpu = inferchaos("faults", "gpu_oom").stdout
    assert "device=0" in gpu and "(kubernetes only)" in gpu


def test_parameters_parse_to_the_types_the_fault_takes():
    assert lookup("spot_reclamation").parse(["notice_s=5", "warm_pool=none", "replicas=50%"]) == {
        "notice_s": 5.0, "warm_pool": None, "replicas": "50%"}
    assert lookup("dependency_latency").parse(["reset=yes", "stall_s=inf"]) == {"reset": True, "stall_s": float("inf")}
    assert lookup("gpu_oom").parse(["leave=256MiB"]) == {"leave": "256MiB"}
    for bad in (["notice_s=-1"], ["notice_s=soon"], ["notice_s=nan"], ["notice_s=inf"], ["notice=1"],
                ["notice_s=1", "notice_s=2"], ["replicas=150%"], ["replicas=0"], ["5"]):
        with pytest.raises(UsageError) as exc:
            lookup("spot_reclamation").parse(bad)
        assert "\n" not in str(exc.value) and str(exc.value).startswith("spot_reclamation: "), (bad, exc.value)


def test_faults_verb_shows_ids_defaults_meaning_and_blast_radius():
    res = inferchaos("faults")
    assert res.returncode == 0, res.stderr
    for spec in CATALOGUE.values():
        assert f"{spec.name}: " in res.stdout
        assert f"runbook:      {spec.runbook}" in res.stdout
        for p in spec.params:
            assert f"{p.name}=" in res.stdout
    assert "notice_s=2.0" in res.stdout and "leave=0" in res.stdout and "mode=stop" in res.stdout
    one = inferchaos("faults", "replica_hang")
    assert one.returncode == 0 and one.stdout.startswith("replica_hang: ") and "spot_reclamation" not in one.stdout


@pytest.mark.parametrize("fault", sorted(CATALOGUE))
def test_every_fault_has_a_runbook_with_the_four_parts(fault):
    text = (REPO / CATALOGUE[fault].runbook).read_text()
    for heading in ("## What it simulates", "## What good looks like", "## When it fails, check", "## Run it by hand"):
        assert heading in text, f"{fault}: {heading} missing"
    assert f"inferchaos plan {fault}" in text
    if CATALOGUE[fault].standalone_refusal is None:
        assert f"inferchaos inject {fault}" in text and "inferchaos revert" in text
    experiment = (REPO / "experiments" / f"test_{fault}.py").read_text()
    assert f'runbook="runbooks/{fault}.md"' in experiment
    assert experiment.count("@pytest.mark.chaos(") == 1


def test_every_verb_has_examples_and_the_exit_codes_in_its_help():
    for verb in ("up", "down", "status", "recover", "report", "faults", "inject", "revert", "plan", "watch"):
        res = inferchaos(verb, "--help")
        assert res.returncode == 0
        assert "examples:" in res.stdout and f"inferchaos {verb}" in res.stdout, verb
        assert "exit codes: 0 ok, 1" in res.stdout and "2 bad input" in res.stdout, verb


def test_status_shows_the_prometheus_url_when_the_cluster_has_one(tmp_path):
    state = ClusterState(phase="stopped", state_dir=str(tmp_path), supervisor_pid=0, supervisor_pgid=0, spec={})
    state.prometheus_url = "http://127.0.0.1:9"
    write_state(state)
    res = inferchaos("status", "--state-dir", str(tmp_path))
    assert "prometheus: http://127.0.0.1:9" in res.stdout
    state.prometheus_url = None
    write_state(state)
    assert "prometheus" not in inferchaos("status", "--state-dir", str(tmp_path)).stdout


def test_frontend_counters_read_show_stat_csv():
    text = ("# pxname,svname,qcur,req_tot,hrsp_5xx,\ninference,FRONTEND,,120,7,\n"
            "replicas,r1,0,,3,\n")
    assert frontend_counters(text) == (120, 7)
    with pytest.raises(ValueError):
        frontend_counters("# pxname,svname\nstats,FRONTEND\n")


# ----------------------------------------------------------------------------- on a real cluster

@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    # --oom reject: an OOMing replica answers 500 and stays up, so 5xx are there to count.
    yield from module_cluster(tmp_path_factory, "operator",
                              ClusterSpec(replicas=3, provisioning_delay_s=0.5, oom="reject"))


@pytest.fixture
def ledger_path(tmp_path: Path):
    path = tmp_path / "ledger.jsonl"
    yield path
    if Ledger(path).open_entries():  # a failed test must not leave its fault applied
        inferchaos("recover", "--ledger", str(path), "--force")


@pytest.fixture
def before(cluster: LocalCluster) -> dict:
    return clean_snapshot(cluster)


def ids(cluster: LocalCluster) -> set[tuple[str, int]]:
    return {(r.name, r.pid) for r in cluster.state.replicas}


def cli(cluster: LocalCluster, ledger: Path, *args: str):  # type: ignore[no-untyped-def]
    return inferchaos(*args, "--state-dir", str(cluster.state_dir), "--ledger", str(ledger))


def injected_id(stdout: str) -> str:
    m = re.search(r"ledger id ([0-9a-f]{12})", stdout)
    assert m, stdout
    return m.group(1)


# Effects, measured on the target after the inject process has exited.
def effect_replica_hang(c: LocalCluster) -> None:
    hung = [r for r in c.state.active() if stopped(r.pid)]
    assert len(hung) == 1, "exactly one replica stopped (state T)"
    with pytest.raises(httpx.ReadTimeout):
        infer(f"http://127.0.0.1:{hung[0].port}", timeout=1.0)
    wait_for(lambda: any(s.name == f"r{hung[0].slot}" and not s.up for s in c.lb_servers()), 8,
             "the LB to eject the hung replica")


def effect_replica_crash(c: LocalCluster) -> None:
    wait_for(lambda: len(c.state.active()) == 2, 5, "the supervisor to see one replica dead")
    assert read_desired(c.state_dir) == {"provisioning_delay_s": 600.0}
    time.sleep(1.0)  # the delay is 600 s: the slot must stay empty
    assert len(c.state.active()) == 2


def effect_replica_restart(c: LocalCluster) -> None:
    # inject waited for the drained replica to exit; the slot restarts in place, with no delay
    assert read_desired(c.state_dir) == {"provisioning_delay_s": 0.0}
    restarted = [h for h in c.state.history if h.slot in {r.slot for r in c.state.replicas}]
    assert restarted and not any(group_alive(h.pgid) for h in restarted)
    wait_for(lambda: sum(r.phase == "ready" for r in c.state.active()) == 3, 30, "the slot serving again")


def effect_spot_reclamation(c: LocalCluster) -> None:
    # inject waited for the notice deadline before it exited: the victim is already gone
    assert sum(group_alive(r.pgid) for r in c.state.active()) == 2
    wait_for(lambda: len(c.state.active()) == 2, 5, "the supervisor to see it gone")


def effect_gpu_oom(c: LocalCluster) -> None:
    hogs = [p for p in processes_mentioning(f"--vgpu-dir {c.state.vgpu_dir}") if "inferchaos.faults.gpu_hog" in p]
    assert len(hogs) == 1, "the hog outlives the inject process"
    full = [r for r in c.state.active() if VirtualDevice(c.state.vgpu_dir or "", r.device).usage().free == 0]
    assert len(full) == 1
    r = infer(f"http://127.0.0.1:{full[0].port}")
    assert r.status_code == 500 and "out of memory" in r.text.lower()


def effect_cuda_errors(c: LocalCluster) -> None:
    # inject provoked one request: the victim answered 500; the trigger outlives inject
    assert len(list(Path(c.state_dir, "cuda").glob("*.trigger"))) == 1
    logs = [Path(r.log).read_text() for r in [*c.state.history, *c.state.replicas]]
    assert any("CUDA error: out of memory (error 2 from cudaMalloc)" in t for t in logs)  # died or rejected


def effect_wrong_answers(c: LocalCluster) -> None:
    wrong = [r.name for r in c.state.active() if not answers_right(r.port)]
    assert len(wrong) == 1, wrong
    assert infer(c.lb_url).status_code == 200


def effect_pipeline_lag(c: LocalCluster) -> None:
    assert stopped(c.state.service("pipeline").pid)
    time.sleep(2.2)
    assert store_feature_age(c) >= 2.0


def effect_dependency_latency(c: LocalCluster) -> None:
    assert ProxyControl(c.state.proxy_url or "").route("feature_store")["toxics"]["latency_ms"] == 300
    started = time.monotonic()
    assert httpx.get(f"{c.state.via_proxy['feature_store']}/features/default", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.3


def effect_model_load_stall(c: LocalCluster) -> None:
    assert ProxyControl(c.state.proxy_url or "").route("model_store")["stall_left_s"] == "inf"
    new = wait_for(lambda: [r for r in c.state.active() if r.phase == "starting"], 10, "a replacement starting")
    time.sleep(2.0)
    assert next(r for r in c.state.replicas if r.name == new[0].name).phase == "starting", "loads through a stall"


INJECT = {
    "replica_hang": [],
    "replica_crash": ["provisioning_delay_s=600"],
    "replica_restart": ["grace_s=5"],
    "spot_reclamation": ["notice_s=1", "provisioning_delay_s=600"],
    "gpu_oom": ["leave=0"],
    "cuda_errors": ["error=oom"],
    "wrong_answers": ["sigma=2"],
    "pipeline_lag": ["mode=stop"],
    "dependency_latency": ["latency_ms=300"],
    "model_load_stall": ["stall_s=inf", "provisioning_delay_s=0.2"],
}
EFFECTS = {name: globals()[f"effect_{name}"] for name in INJECT}


def test_every_fault_but_the_surge_can_be_injected_by_hand():
    assert set(INJECT) == {k for k, s in CATALOGUE.items() if s.standalone_refusal is None}
    assert set(CATALOGUE) - set(INJECT) == {"traffic_surge", "autoscaled_surge"}


@pytest.mark.cluster
@pytest.mark.parametrize("name", sorted(INJECT))
def test_inject_leaves_the_fault_applied_and_revert_restores(name, cluster, before, ledger_path):
    res = cli(cluster, ledger_path, "inject", name, *INJECT[name])
    assert res.returncode == 0, res.stdout + res.stderr
    entry_id = injected_id(res.stdout)
    assert f"inferchaos revert {entry_id} --ledger {ledger_path}" in res.stdout
    (entry,) = Ledger(ledger_path).open_entries()
    assert entry.id == entry_id and entry.fault == name
    assert not pid_alive(entry.runner_pid), "the inject process is gone; its entry stays open"
    EFFECTS[name](cluster)

    rev = inferchaos("revert", entry_id, "--ledger", str(ledger_path))
    assert rev.returncode == 0, rev.stdout + rev.stderr
    assert f"{name} {entry_id}: reverted" in rev.stdout
    assert Ledger(ledger_path).open_entries() == []
    assert snapshot(cluster) == before
    again = inferchaos("revert", entry_id, "--ledger", str(ledger_path))
    assert again.returncode == 0 and "already reverted" in again.stdout


@pytest.mark.cluster
def test_revert_all_closes_the_ledger_and_recover_handles_inject_entries(cluster, before, ledger_path):
    res = cli(cluster, ledger_path, "inject", "replica_hang")
    assert res.returncode == 0, res.stderr
    hung = [r for r in cluster.state.active() if stopped(r.pid)]
    assert len(hung) == 1
    rev = inferchaos("revert", "--all", "--ledger", str(ledger_path))
    assert rev.returncode == 0, rev.stdout + rev.stderr
    assert Ledger(ledger_path).open_entries() == []
    assert not stopped(hung[0].pid)
    assert snapshot(cluster) == before
    nothing = inferchaos("revert", "--all", "--ledger", str(ledger_path))
    assert nothing.returncode == 0 and "nothing to revert" in nothing.stdout

    res = cli(cluster, ledger_path, "inject", "wrong_answers")
    assert res.returncode == 0, res.stderr
    assert len([r for r in cluster.state.active() if not answers_right(r.port)]) == 1
    rec = inferchaos("recover", "--ledger", str(ledger_path))  # the inject process is gone: recover undoes it
    assert rec.returncode == 0 and "wrong_answers" in rec.stdout, rec.stdout + rec.stderr
    assert Ledger(ledger_path).open_entries() == []
    assert snapshot(cluster) == before


@pytest.mark.cluster
def test_plan_names_the_victims_and_changes_nothing(cluster, before, ledger_path):
    res = cli(cluster, ledger_path, "plan", "replica_crash", "replicas=2")
    assert res.returncode == 0, res.stderr
    victims = [r for r in sorted(cluster.state.active(), key=lambda r: r.slot or 0)][:2]
    for v in victims:
        assert f"SIGKILL {v.name} (pid {v.pid}, slot r{v.slot})" in res.stdout
    assert res.stdout.count("SIGKILL") == 2
    assert "nothing is changed" in res.stdout and "inferchaos inject replica_crash replicas=2" in res.stdout
    surge = cli(cluster, ledger_path, "plan", "traffic_surge", "factor=3")
    assert surge.returncode == 0 and "second locust" in surge.stdout and "only inside an experiment" in surge.stdout
    assert not ledger_path.exists()
    assert snapshot(cluster) == before


@pytest.mark.cluster
def test_inject_is_refused_while_another_fault_is_applied(cluster, before, ledger_path):
    first = cli(cluster, ledger_path, "inject", "wrong_answers")
    assert first.returncode == 0, first.stderr
    entry_id = injected_id(first.stdout)
    written = ledger_path.read_bytes()
    pids = ids(cluster)
    second = cli(cluster, ledger_path, "inject", "replica_crash")
    assert second.returncode == 2
    line = one_line(second.stderr)
    assert line.startswith("inferchaos: error:") and entry_id in line and "revert" in line
    assert ledger_path.read_bytes() == written and ids(cluster) == pids
    assert inferchaos("revert", entry_id, "--ledger", str(ledger_path)).returncode == 0
    assert snapshot(cluster) == before


@pytest.mark.cluster
def test_inject_beyond_the_blast_radius_touches_nothing(cluster, before, ledger_path):
    pids = ids(cluster)
    for args in (["replica_crash", "replicas=3"], ["replica_hang", "replicas=100%"]):
        res = cli(cluster, ledger_path, "inject", *args)
        assert res.returncode == 2
        line = one_line(res.stderr)
        assert line.startswith(f"inferchaos: error: {args[0]}: blast radius") and "at most 2" in line, line
    assert not ledger_path.exists() and ids(cluster) == pids


# ----------------------------------------------------------------------------- watch
def send(url: str, n: int) -> tuple[int, int, list[float]]:
    """n requests one after another: (answered 200, answered 5xx, latencies in ms)."""
    ok = errors = 0
    latencies = []
    with httpx.Client(timeout=10) as client:
        for _ in range(n):
            started = time.monotonic()
            r = client.post(f"{url}/v2/models/mlp/infer", json={"inputs": [
                {"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]})
            latencies.append((time.monotonic() - started) * 1000)
            ok += r.status_code == 200
            errors += r.status_code >= 500
    return ok, errors, latencies


@pytest.mark.cluster
def test_watch_counts_exactly_what_clients_sent(cluster, before, ledger_path):
    ledger = Ledger(ledger_path)
    first = take(cluster, ledger)
    ok, errors, latencies = send(cluster.lb_url, 40)
    reading = between(first, take(cluster, ledger))
    assert (ok, errors) == (40, 0)
    assert reading.requests == 40 and reading.errors_5xx == 0
    assert reading.latency_count == 40, "every answer is in the replicas' e2e histograms"
    assert reading.p99_ms is not None and 0 < reading.p99_ms <= max(latencies) * 2.5
    assert reading.now.ready == 3 and len(reading.now.lb) == 3
    assert all(state in ("running", "starting") for _, state, _ in reading.now.lb), reading.now.lb
    assert reading.now.faults == []
    idle = between(reading.now, take(cluster, ledger))
    assert idle.requests == 0 and idle.p99_ms is None


@pytest.mark.cluster
def test_watch_counts_the_5xx_clients_got_and_shows_the_fault(cluster, before, ledger_path):
    res = cli(cluster, ledger_path, "inject", "gpu_oom", "leave=0")
    assert res.returncode == 0, res.stderr
    entry_id = injected_id(res.stdout)
    ledger = Ledger(ledger_path)
    try:
        first = take(cluster, ledger)
        ok, errors, _ = send(cluster.lb_url, 30)
        reading = between(first, take(cluster, ledger))
        assert errors > 0, "the OOMing replica (--oom reject) answers 500 until the LB ejects it"
        assert reading.requests == 30 and reading.errors_5xx == errors
        assert [e.id for e in reading.now.faults] == [entry_id]
        once = cli(cluster, ledger_path, "watch", "--once", "--interval", "0.5")
        assert once.returncode == 0, once.stderr
        line = one_line(once.stdout)
        assert f"faults=gpu_oom:{entry_id}" in line and "req/s=" in line and "5xx/s=" in line and "ready=" in line
        assert re.search(r"lb=r\d+:\w+,r\d+:\w+,r\d+:\w+ ", line), line
    finally:
        assert inferchaos("revert", "--all", "--ledger", str(ledger_path)).returncode == 0
    assert snapshot(cluster) == before


@pytest.mark.cluster
def test_watch_redraws_in_place_on_a_terminal(cluster, ledger_path):
    out: list[str] = []
    ticks = iter(range(3))
    rc = watch(cluster, Ledger(ledger_path), 0.2, once=False, tty=True, write=out.append,
               running=lambda: next(ticks, None) is not None)
    assert rc == 0 and len(out) == 3
    assert not out[0].startswith("\x1b[") and all(o.startswith("\x1b[5F\x1b[J") for o in out[1:])
    assert "requests/s" in out[0] and "faults     none applied" in out[0]


@pytest.mark.cluster
def test_watch_without_a_running_cluster_is_bad_input(tmp_path):
    res = inferchaos("watch", "--once", "--state-dir", str(tmp_path / "nothing"))
    assert res.returncode == 2 and "no local cluster" in one_line(res.stderr)


# ----------------------------------------------------------------------------- game days
@pytest.mark.cluster
def test_inject_for_reverts_by_itself_and_says_who_did_what_when(cluster, before, ledger_path, monkeypatch):
    monkeypatch.setenv("INFERCHAOS_OPERATOR", "alice@gameday")
    t0 = time.time()
    res = cli(cluster, ledger_path, "inject", "replica_hang", "--for", "3s")
    assert res.returncode == 0, res.stdout + res.stderr
    entry_id = injected_id(res.stdout)
    assert "landed: stopped (state T)" in res.stdout and "reverts by itself in 3 s" in res.stdout
    hung = [r for r in cluster.state.active() if stopped(r.pid)]
    assert len(hung) == 1, "applied, with the inject process already gone"
    wait_for(lambda: not Ledger(ledger_path).open_entries(), 15, "the timer to revert the hang")
    done = time.time()
    assert not stopped(hung[0].pid) and snapshot(cluster) == before
    entries = [e for e in Ledger(ledger_path).entries() if e.id == entry_id]
    applied, reverted = entries[0], entries[-1]
    assert {e.operator for e in entries} == {"alice@gameday"} and reverted.event == "reverted"
    assert applied.wall + 3 <= reverted.wall <= done and reverted.wall - t0 >= 3, (applied.wall, reverted.wall)
    wait_for(lambda: processes_mentioning(f"revert {entry_id}") == [], 5, "the timer to exit")


@pytest.mark.cluster
def test_inject_for_counts_from_the_landing_of_a_slow_inject(cluster, before, ledger_path):
    """A slow inject: dependency_latency proves its delay with a request through the route (inject
    times one, the landing check another), so at 1.5 s of latency it lands ~3 s after the timer
    started, later than `--for 2s` itself. Counted from the start, the timer would revert it
    before it landed; counted from the landing, it stays in force the full 2 s after."""
    for_s, latency_s = 2.0, 1.5
    proxy = ProxyControl(cluster.state.proxy_url or "")
    t0 = time.monotonic()
    res = cli(cluster, ledger_path, "inject", "dependency_latency", "dependency=model_store",
              f"latency_ms={latency_s * 1000:g}", "--for", f"{for_s:g}s")
    exited = time.monotonic()  # the inject process is gone: the fault landed before this
    assert res.returncode == 0, res.stdout + res.stderr
    assert "reverts by itself in 2 s from its landing" in res.stdout, res.stdout
    assert exited - t0 >= 2 * latency_s > for_s, "the inject was slower than --for itself"
    entry_id = injected_id(res.stdout)
    # in force (the route's toxics read back from the proxy) until the timer reverts it
    last_in_force = exited
    while True:
        toxics = proxy.route("model_store")["toxics"]
        now = time.monotonic()
        if toxics == CLEAN_TOXICS:
            cleared = now
            break
        assert toxics["latency_ms"] == latency_s * 1000, toxics
        last_in_force = now
        assert now - exited < for_s + 15, "the timer did not revert it"
        time.sleep(0.05)
    # the timer's own account: when it started counting, on the same (monotonic) clock
    log = (ledger_path.parent / f"timer-{entry_id}.log").read_text()
    m = re.search(r"counting 2 s from monotonic ([0-9.]+) \(it landed\)", log)
    assert m, log
    counted_from = float(m.group(1))
    assert t0 + 2 * latency_s <= counted_from <= exited, (t0, counted_from, exited)  # the landing, not the start
    assert cleared - counted_from >= for_s, (counted_from, cleared)
    # seen from outside: still in force for_s after the inject returned, less the time it took to exit
    assert last_in_force - exited >= for_s - 0.5, (exited, last_in_force)
    wait_for(lambda: not Ledger(ledger_path).open_entries(), 10, "the timer to close the entry")
    reverted = [e for e in Ledger(ledger_path).entries() if e.id == entry_id][-1]
    assert reverted.event == "reverted"
    wait_for(lambda: processes_mentioning(f"revert {entry_id}") == [], 5, "the timer to exit")
    assert snapshot(cluster) == before


@pytest.mark.cluster
def test_a_timer_whose_fault_was_reverted_first_goes_away(cluster, before, ledger_path):
    res = cli(cluster, ledger_path, "inject", "replica_hang", "--for", "10m")
    assert res.returncode == 0, res.stdout + res.stderr
    entry_id = injected_id(res.stdout)
    assert processes_mentioning(f"revert {entry_id}"), "the timer runs"
    rev = inferchaos("revert", entry_id, "--ledger", str(ledger_path))
    assert rev.returncode == 0, rev.stdout + rev.stderr
    wait_for(lambda: processes_mentioning(f"revert {entry_id}") == [], 5, "the timer to see it reverted and exit")
    assert snapshot(cluster) == before


@pytest.mark.parametrize("given", ["0", "-3s", "5 minutes", "s"])
def test_a_bad_duration_is_one_line_exit_2(given, tmp_path):
    res = inferchaos("inject", "replica_hang", "--for", given, "--state-dir", str(tmp_path / "none"),
                     "--ledger", str(tmp_path / "l.jsonl"))
    assert res.returncode == 2 and "--for" in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "l.jsonl").exists()


# ----------------------------------------------------------------------------- inferchaos load
def locusts(cluster: LocalCluster) -> list[str]:
    return [p for p in processes_mentioning(cluster.lb_url) if "locust" in p]


def load_cmd(cluster: LocalCluster, ledger: Path, tmp: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "inferchaos.cli", "load", "--state-dir", str(cluster.state_dir), "--ledger",
            str(ledger), "--log", str(tmp / "requests.jsonl"), *args]


@pytest.mark.cluster
def test_load_sends_the_rate_for_its_duration_serves_the_ui_and_leaves_nothing(cluster, ledger_path, tmp_path):
    proc = subprocess.Popen(load_cmd(cluster, ledger_path, tmp_path, "--load-rate", "30", "--for", "4s",
                                     "--web", "127.0.0.1:0"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "--web '127.0.0.1:0'" in err, err  # a port is needed, not 0
    port = free_port()
    proc = subprocess.Popen(load_cmd(cluster, ledger_path, tmp_path, "--load-rate", "30", "--for", "4s",
                                     "--web", f"127.0.0.1:{port}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    wait_for(lambda: _http_ok(f"http://127.0.0.1:{port}/"), 30, "locust's web UI on loopback")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    records = read_log(tmp_path / "requests.jsonl")
    assert 60 <= len(records) <= 200 and sum(r.ok for r in records) >= 0.95 * len(records), len(records)
    assert "req/s" in err and f"stopped: {len(records)} requests" in err, err
    assert Ledger(ledger_path).open_entries() == [] and locusts(cluster) == []


@pytest.mark.cluster
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_load_stops_cleanly_on_a_signal(cluster, ledger_path, tmp_path, sig):
    proc = subprocess.Popen(load_cmd(cluster, ledger_path, tmp_path, "--load-rate", "20"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: (tmp_path / "requests.jsonl").exists() or bool(locusts(cluster)), 30, "the load to start")
    time.sleep(2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped:" in err, err
    assert Ledger(ledger_path).open_entries() == [] and locusts(cluster) == []


@pytest.mark.cluster
def test_a_killed_load_is_ended_by_recover(cluster, ledger_path, tmp_path):
    proc = subprocess.Popen(load_cmd(cluster, ledger_path, tmp_path, "--load-rate", "20"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: bool(locusts(cluster)) and Ledger(ledger_path).open_entries(), 30, "the load to start")
    proc.kill()
    proc.wait(30)
    assert locusts(cluster), "SIGKILL leaves locust running (its own process group)"
    rec = inferchaos("recover", "--ledger", str(ledger_path))
    assert rec.returncode == 0 and "locust" in rec.stdout, rec.stdout + rec.stderr
    wait_for(lambda: locusts(cluster) == [], 10, "recover to end locust")
    assert Ledger(ledger_path).open_entries() == []


def test_load_is_open_loop_only(tmp_path):
    res = inferchaos("load", "http://127.0.0.1:9", "--load-users", "3", "--ledger", str(tmp_path / "l.jsonl"))
    assert res.returncode == 2 and "open loop" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
