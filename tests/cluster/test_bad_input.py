"""Bad input, for every CLI verb and every pytest option of ours: exactly one line on
stderr starting `inferchaos: error:`, exit code 2, no traceback, and nothing injected —
no ledger entry written, no process started, no replica of a live cluster touched.

The cases that reach a cluster point at a real one, so a check that let bad input through
would inject for real and the "nothing touched" assertions would catch it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inferchaos.faults.catalogue import CATALOGUE
from inferchaos.faults.spec import Param
from inferchaos.faults.ledger import Ledger
from inferchaos.targets.local import LocalCluster
from inferchaos.targets.local.control import read_desired
from inferchaos.targets.local.processes import stopped
from tests.support.faultcases import repo_env
from tests.support.leftovers import processes_mentioning
from tests.support.phases import slo_set
from tests.support.inner import PYTEST

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
SHORT = slo_set(hold_s=2)


@pytest.fixture(scope="module")
def cluster(standard_cluster: LocalCluster) -> LocalCluster:
    return standard_cluster


@pytest.fixture
def places(cluster: LocalCluster, tmp_path: Path) -> dict[str, str]:
    """What a case's {placeholders} stand for."""
    (tmp_path / "a-file").write_text("not a directory\n")
    (tmp_path / "a-dir").mkdir()
    (tmp_path / "bad.toml").write_text("[defaults.slo\np99_ms = 2000\n")
    (tmp_path / "latin1.toml").write_bytes(b"[defaults.slo]\n# caf\xe9\np99_ms = 2000\n")
    (tmp_path / "unknown.toml").write_text("[defaults.slo]\nlatency_ms = 5\n")
    (tmp_path / "bad.jsonl").write_text('{"inputs": []}\n{"inputs": [\n')
    cluster.wait_steady(60)
    return {"live": str(cluster.state_dir), "none": str(tmp_path / "no-cluster"), "file": str(tmp_path / "a-file"),
            "dir": str(tmp_path / "a-dir"), "ledger": str(tmp_path / "ledger.jsonl"), "tmp": str(tmp_path),
            "missing": str(tmp_path / "missing.toml"), "bad_toml": str(tmp_path / "bad.toml"),
            "latin1": str(tmp_path / "latin1.toml"), "unknown_toml": str(tmp_path / "unknown.toml"),
            "bad_payload": str(tmp_path / "bad.jsonl")}


def touched(cluster: LocalCluster) -> dict:
    """Everything a fault could have changed on the live cluster."""
    state = cluster.state
    return {"replicas": {(r.name, r.pid) for r in state.replicas}, "desired": read_desired(cluster.state_dir),
            "stopped": [r.name for r in state.replicas if stopped(r.pid)],
            "pipeline_stopped": stopped(state.service("pipeline").pid),
            "hogs": [p for p in processes_mentioning(str(cluster.state_dir)) if "gpu_hog" in p],
            "locusts": [p for p in processes_mentioning(f"--host {cluster.lb_url}") if "locust" in p]}


def fill(args: list[str], places: dict[str, str]) -> list[str]:
    return [a.format(**places) for a in args]


def assert_one_error_line(res: subprocess.CompletedProcess, words: list[str], prefix: str = "") -> str:
    out = res.stdout + res.stderr
    assert res.returncode == 2, out[-2000:]
    assert "Traceback" not in out, out[-2000:]
    # pytest.exit writes "Exit: <message>" to stderr: for pytest too, stderr is that one line.
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out[-2000:]
    assert lines[0].startswith(prefix + "inferchaos: error:"), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------- the CLI
CLI_CASES = {
    # up
    "up: replicas below 1": (["up", "--replicas", "-1", "--state-dir", "{none}"], ["replicas must be at least 1"]),
    "up: negative provisioning delay": (["up", "--provisioning-delay", "-2", "--state-dir", "{none}"],
                                        ["provisioning delay must be 0 or more"]),
    "up: negative startup timeout": (["up", "--startup-timeout", "-5", "--state-dir", "{none}"],
                                     ["startup timeout must be positive"]),
    "up: state dir is a file": (["up", "--detach", "--state-dir", "{file}"], ["is not a directory"]),
    "up: already running": (["up", "--detach", "--state-dir", "{live}"], ["already running"]),
    # down / status
    "down: unknown option": (["down", "--bogus"], ["unrecognized arguments: --bogus"]),
    "down: state dir is a file": (["down", "--state-dir", "{file}"], ["is not a directory"]),
    "status: state dir is a file": (["status", "--state-dir", "{file}"], ["is not a directory"]),
    "status: stray argument": (["status", "extra", "--state-dir", "{live}"], ["unrecognized arguments: extra"]),
    # recover
    "recover: ledger is a directory": (["recover", "--ledger", "{dir}"], ["is a directory"]),
    "recover: unknown option": (["recover", "--all"], ["unrecognized arguments: --all"]),
    # report
    "report: no summary": (["report", "{none}"], ["no summary at"]),
    "report: nothing to render": (["report"], ["report needs DIR"]),
    "report: compare needs two": (["report", "--compare", "{tmp}"], ["--compare: expected 2 arguments"]),
    # faults
    "faults: unknown fault": (["faults", "nosuch"], ["unknown fault 'nosuch'", "known: ", "spot_reclamation"]),
    "faults: typo": (["faults", "replica_crsh"], ["did you mean 'replica_crash'"]),
    "faults: a line break": (["faults", "replica\ncrash"], ["unknown fault 'replica\\ncrash'"]),
    # inject
    "inject: unknown fault": (["inject", "nosuch", "--state-dir", "{live}", "--ledger", "{ledger}"],
                              ["unknown fault 'nosuch'"]),
    "inject: unknown parameter": (["inject", "spot_reclamation", "notice=5", "--state-dir", "{live}", "--ledger",
                                   "{ledger}"], ["unknown parameter 'notice'", "did you mean 'notice_s'"]),
    "inject: not a number": (["inject", "spot_reclamation", "notice_s=soon", "--state-dir", "{live}", "--ledger",
                              "{ledger}"], ["notice_s=soon", "a number of seconds"]),
    "inject: negative duration": (["inject", "spot_reclamation", "notice_s=-1", "--state-dir", "{live}",
                                   "--ledger", "{ledger}"], ["notice_s=-1", "must be 0 or more"]),
    "inject: negative provisioning delay": (["inject", "replica_crash", "provisioning_delay_s=-3", "--state-dir",
                                             "{live}", "--ledger", "{ledger}"], ["provisioning_delay_s=-3"]),
    "inject: blast radius over 100%": (["inject", "replica_crash", "replicas=150%", "--state-dir", "{live}",
                                        "--ledger", "{ledger}"], ["replicas=150%", "(0, 100]"]),
    "inject: blast radius = every replica": (["inject", "replica_crash", "replicas=3", "--state-dir", "{live}",
                                              "--ledger", "{ledger}"], ["would touch 3 of 3", "at most 2"]),
    "inject: not KEY=VALUE": (["inject", "replica_hang", "oops", "--state-dir", "{live}", "--ledger", "{ledger}"],
                              ["KEY=VALUE"]),
    "inject: bad choice": (["inject", "pipeline_lag", "mode=sideways", "--state-dir", "{live}", "--ledger",
                            "{ledger}"], ["mode=sideways", "one of stop, slow_reads, both"]),
    "inject: leave over 100%": (["inject", "gpu_oom", "leave=150%", "--state-dir", "{live}", "--ledger",
                                 "{ledger}"], ["leave=150%"]),
    "inject: cuda error that does not exist": (["inject", "cuda_errors", "error=segfault", "--state-dir", "{live}",
                                                "--ledger", "{ledger}"], ["error=segfault", "oom, illegal_address, ecc"]),
    "inject: cuda rate above 1": (["inject", "cuda_errors", "rate=1.5", "--state-dir", "{live}", "--ledger",
                                   "{ledger}"], ["rate=1.5: must be at most 1"]),
    "inject: cuda rate for a lost context": (["inject", "cuda_errors", "error=ecc", "rate=0.5", "--state-dir", "{live}",
                                              "--ledger", "{ledger}"], ["rate applies to error=oom only"]),
    "inject: zero bandwidth": (["inject", "model_load_stall", "bandwidth_kbs=0", "--state-dir", "{live}",
                                "--ledger", "{ledger}"], ["bandwidth_kbs=0", "above 0"]),
    "inject: nothing to inject": (["inject", "dependency_latency", "latency_ms=0", "--state-dir", "{live}",
                                   "--ledger", "{ledger}"], ["nothing to inject"]),
    "inject: surge outside an experiment": (["inject", "traffic_surge", "--state-dir", "{live}", "--ledger",
                                             "{ledger}"], ["traffic_surge runs only inside an experiment"]),
    "inject: no cluster there": (["inject", "replica_crash", "--state-dir", "{none}", "--ledger", "{ledger}"],
                                 ["no local cluster in"]),
    "inject: state dir is a file": (["inject", "replica_crash", "--state-dir", "{file}", "--ledger", "{ledger}"],
                                    ["is not a directory"]),
    "inject: ledger is a directory": (["inject", "replica_crash", "--state-dir", "{live}", "--ledger", "{dir}"],
                                      ["is a directory"]),
    "inject: ledger under a file": (["inject", "replica_crash", "--state-dir", "{live}", "--ledger",
                                     "{file}/ledger.jsonl"], ["cannot write the ledger"]),
    "inject: no fault given": (["inject"], ["the following arguments are required: FAULT"]),
    "inject: a line break in a value": (["inject", "spot_reclamation", "notice_s=5\nrm", "--state-dir", "{live}",
                                         "--ledger", "{ledger}"], ["notice_s='5\\nrm'"]),
    # plan
    "plan: unknown fault": (["plan", "nosuch", "--state-dir", "{live}"], ["unknown fault 'nosuch'"]),
    "plan: blast radius over 100%": (["plan", "replica_hang", "replicas=150%", "--state-dir", "{live}"],
                                     ["(0, 100]"]),
    "plan: blast radius = every replica": (["plan", "replica_hang", "replicas=100%", "--state-dir", "{live}"],
                                           ["would touch 3 of 3"]),
    "plan: negative duration": (["plan", "gpu_oom", "ramp_s=-4", "--state-dir", "{live}"], ["ramp_s=-4"]),
    "plan: no cluster there": (["plan", "replica_hang", "--state-dir", "{none}"], ["no local cluster in"]),
    # revert
    "revert: unknown id": (["revert", "0123456789ab", "--ledger", "{ledger}"], ["no ledger entry '0123456789ab'"]),
    "revert: neither id nor --all": (["revert", "--ledger", "{ledger}"], ["revert needs a ledger ID"]),
    "revert: both id and --all": (["revert", "abc", "--all", "--ledger", "{ledger}"], ["not both"]),
    "revert: ledger is a directory": (["revert", "--all", "--ledger", "{dir}"], ["is a directory"]),
    # watch
    "load: closed loop": (["load", "--state-dir", "{live}", "--load-users", "3"], ["open loop", "--load-rate"]),
    "load: zero rate": (["load", "--state-dir", "{live}", "--load-rate", "0"], ["--load-rate", "above 0"]),
    "load: bad duration": (["load", "--state-dir", "{live}", "--for", "soon"], ["--for"]),
    "load: bad web address": (["load", "--state-dir", "{live}", "--web", "8089"], ["--web", "HOST:PORT"]),
    "load: no cluster there": (["load", "--state-dir", "{none}"], ["no local cluster in"]),
    "load: a local cluster's option": (["load", "--state-dir", "{live}", "--replica-cmd", "serve"],
                                       ["--replica-cmd", "local cluster"]),
    "watch: zero interval": (["watch", "--interval", "0", "--state-dir", "{live}"], ["--interval", "above 0"]),
    "watch: negative interval": (["watch", "--interval", "-1", "--state-dir", "{live}"], ["--interval"]),
    "watch: interval not a number": (["watch", "--interval", "often", "--state-dir", "{live}"],
                                     ["expected seconds"]),
    "watch: no cluster there": (["watch", "--once", "--state-dir", "{none}"], ["no local cluster in"]),
    "watch: ledger is a directory": (["watch", "--once", "--state-dir", "{live}", "--ledger", "{dir}"],
                                     ["is a directory"]),
    # inventory
    "inventory: no cluster there": (["inventory", "--state-dir", "{none}"], ["no local cluster"]),
    "inventory: kubernetes without a namespace": (["inventory", "--target", "kubernetes", "--kubeconfig", "{file}"],
                                                  ["--namespace"]),
    # autoscale / preheat
    "autoscale: min above max": (["autoscale", "--target", "8", "--min", "3", "--max", "2", "--state-dir", "{live}"],
                                 ["min 3 is above max 2"]),
    "autoscale: zero target": (["autoscale", "--target", "0", "--state-dir", "{live}"], ["target must be above 0"]),
    "autoscale: no target": (["autoscale", "--state-dir", "{live}"], ["needs --target"]),
    "autoscale: no cluster there": (["autoscale", "--target", "8", "--state-dir", "{none}"], ["no local cluster"]),
    "preheat: negative": (["preheat", "-1", "--state-dir", "{live}"], ["0 or more replicas"]),
    "preheat: past the LB slots": (["preheat", "99", "--state-dir", "{live}"], ["above the cluster's 16 LB slots"]),
}


def out_of_bounds(p: Param) -> str:
    """A value the parameter's own declared kind and bounds refuse."""
    if p.kind == "choice":
        return "nosuch"
    if p.above is not None:
        return f"{p.above:g}"
    return {"bool": "maybe", "radius": "0", "size": "150%", "number": "x"}.get(p.kind, "-1")


#: from the specs: every parameter of every fault, out of its bounds, refused by `plan` (exit 2)
CLI_CASES.update({
    f"plan: {spec.name} {p.name} out of bounds": (["plan", spec.name, f"{p.name}={out_of_bounds(p)}", "--state-dir",
                                                   "{live}"], [f"{spec.name}: {p.name}={out_of_bounds(p)}"])
    for spec in CATALOGUE.values() for p in spec.params_on("local")})


def verbs() -> set[str]:
    """Every verb the parser has: a new one without a bad-input case fails the table's test."""
    import argparse

    from inferchaos.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


VERBS = tuple(sorted(verbs()))


def test_the_table_covers_every_verb():
    assert {args[0] for args, _ in CLI_CASES.values()} == set(VERBS)


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_is_one_line_exit_2_and_nothing_injected(case, cluster, places):
    args, words = CLI_CASES[case]
    before = touched(cluster)
    res = subprocess.run([sys.executable, "-m", "inferchaos.cli", *fill(args, places)], capture_output=True,
                         text=True, timeout=60, cwd=REPO, env=repo_env())
    assert_one_error_line(res, words)
    assert not Path(places["ledger"]).exists(), "a ledger entry was written"
    assert not Path(places["none"]).exists(), "something was started where no cluster was"
    assert processes_mentioning(places["tmp"]) == []
    assert touched(cluster) == before


# ----------------------------------------------------------------------------- pytest options
PYTEST_CASES = {
    "--target unknown": (["--target", "bogus"], ["--target", "bogus"], None),
    "--slo missing file": (["--slo", "{missing}"], ["missing.toml", "cannot read SLO file"], None),
    "--slo is a directory": (["--slo", "{dir}"], ["cannot read SLO file"], None),
    "--slo not UTF-8": (["--slo", "{latin1}"], ["not UTF-8"], None),
    "--slo invalid TOML": (["--slo", "{bad_toml}"], ["invalid TOML"], None),
    "--slo unknown key": (["--slo", "{unknown_toml}"], ["latency_ms"], None),
    "--slo-set negative duration": (["--slo-set", "hold_s=-1"], ["hold_s", "-1"], None),
    "--slo-set availability over 1": (["--slo-set", "availability=1.5"], ["availability", "1.5"], None),
    "--slo-set unknown key": (["--slo-set", "nosuchkey=1"], ["nosuchkey"], None),
    "--slo-set not KEY=VALUE": (["--slo-set", "p99_ms"], ["KEY=VALUE"], None),
    "--fault-set not FAULT.KEY=VALUE": (["--fault-set", "notice_s=5"], ["FAULT.KEY=VALUE"], None),
    "--fault-set unknown fault": (["--fault-set", "spot_reclaim.notice_s=5"], ["unknown fault", "spot_reclamation"], None),
    "--fault-set unknown key": (["--fault-set", "spot_reclamation.notice=5"], ["unknown parameter", "notice_s"], None),
    "--fault-set negative notice": (["--fault-set", "spot_reclamation.notice_s=-1"], ["notice_s", "-1"], None),
    "--fault-set given twice": (["--fault-set", "spot_reclamation.notice_s=5", "--fault-set",
                                 "spot_reclamation.notice_s=6"], ["given twice"], None),
    "--slo-set with a line break": (["--slo-set", "availability=2\n"], ["availability"], None),
    "--state-dir without a cluster": (["--state-dir", "{none}"], ["no-cluster"], None),
    "--state-dir is a file": (["--state-dir", "{file}"], ["a-file"], None),
    "--ledger is a directory": (["--ledger", "{dir}"], ["a-dir"], None),
    "--chaos-report is a file": (["--chaos-report", "{file}"], ["a-file"], None),
    "--prometheus not a URL": (["--prometheus", "localhost:9090"], ["--prometheus", "http(s)://"], None),
    "--grafana not a URL": (["--grafana", "grafana"], ["--grafana", "http(s)://"], None),
    "--metrics-port not a port": (["--metrics-port", "99999"], ["--metrics-port", "0..65535"], None),
    "--gpu-hour-price negative": (["--gpu-hour-price", "-1"], ["-1"], None),
    "--gpu-price without a default": (["--gpu-price", "A100=3"], ["--gpu-price needs --gpu-hour-price"], None),
    "--gpu-price not TYPE=PRICE": (["--gpu-hour-price", "2", "--gpu-price", "A100"], ["A100"], None),
    "--target kubernetes with --state-dir": (["--target", "kubernetes", "--state-dir", "{live}"],
                                             ["applies to --target local only"], None),
    "--api unknown": (["--api", "grpc"], ["--api", "grpc", "oip, openai, openai-chat, auto"], None),
    "--model the server does not list": (["--model", "resnet50"], ["resnet50", "does not serve it", "lists mlp"],
                                         None),
    "--api oip with a model it lacks": (["--api", "oip", "--model", "bert"], ["bert", "/v2/models/bert"], None),
    "--payload unreadable": (["--payload", "{missing}"], ["--payload", "cannot read it"], None),
    "--payload not JSON lines": (["--payload", "{bad_payload}"], ["--payload", ":2:", "not JSON"], None),
    "--load-rate zero": (["--load-rate", "0"], ["--load-rate", "above 0"], None),
    "--load-rate negative": (["--load-rate", "-50"], ["--load-rate", "above 0"], None),
    "--load-rate not a number": (["--load-rate", "fast"], ["--load-rate", "'fast'"], None),
    "--load-users zero": (["--load-users", "0"], ["--load-users", "at least 1"], None),
    "--load-rate and --load-users": (["--load-rate", "10", "--load-users", "4"], ["give one"], None),
    "--load-workers zero": (["--load-workers", "0"], ["--load-workers", "at least 1"], None),
    "--load-workers not a number": (["--load-workers", "abc"], ["--load-workers", "'abc'"], None),
    "--load-arrival unknown": (["--load-arrival", "bursty"], ["--load-arrival", "poisson, constant"], None),
    "--load-max-in-flight zero": (["--load-max-in-flight", "0"], ["--load-max-in-flight"], None),
    "--header not NAME=ENV_VAR": (["--header", "Authorization: Bearer x"], ["--header", "NAME=ENV_VAR"], None),
    "--header variable unset": (["--header", "Authorization=NO_SUCH_VARIABLE_X"], ["NO_SUCH_VARIABLE_X", "not set"],
                                None),
    "--replica-cmd without {port}": (["--replica-cmd", "mlserver start ."], ["{port}"], None),
    "--ready-path not a path": (["--ready-path", "health"], ["--ready-path", "starting with /"], None),
}

#: Cases only the server can refute (it is asked what it serves once the target is up).
ASKS_THE_SERVER = {"--model the server does not list", "--api oip with a model it lacks"}

#: The Kubernetes options, checked before anything connects (no cluster, no --state-dir).
KUBE = ["--target", "kubernetes", "--allow-cluster", "uid-of-fake", "--allow-namespace", "ml"]
KUBE_CASES = {
    "--namespace missing": ([*KUBE, "--selector", "app=x", "--endpoint", "http://x"], ["needs --namespace"]),
    "--namespace kube-system": ([*KUBE, "--namespace", "kube-system", "--allow-namespace", "kube-system",
                                 "--selector", "app=x", "--endpoint", "http://x"], ["kube-system is refused"]),
    "--allow-namespace missing": (["--target", "kubernetes", "--namespace", "other", "--selector", "app=x",
                                   "--endpoint", "http://x"], ["namespace other is not allowed"]),
    "--selector malformed": ([*KUBE, "--namespace", "ml", "--selector", "app==,", "--endpoint", "http://x"],
                             ["--selector"]),
    "--endpoint not a URL": ([*KUBE, "--namespace", "ml", "--selector", "app=x", "--endpoint", "svc:8000"],
                             ["--endpoint"]),
    "--dependency not NAME=HOST": ([*KUBE, "--namespace", "ml", "--selector", "app=x", "--endpoint", "http://x",
                                    "--dependency", "model_store"], ["--dependency", "NAME=HOST"]),
    "--server-metrics-port not a port": ([*KUBE, "--namespace", "ml", "--selector", "app=x", "--endpoint",
                                          "http://x", "--server-metrics-port", "http"], ["--server-metrics-port"]),
    "--kubeconfig missing": ([*KUBE, "--namespace", "ml", "--selector", "app=x", "--endpoint", "http://x",
                              "--kubeconfig", "{missing}"], ["no kubeconfig at"]),
    "--kube-context unknown": ([*KUBE, "--namespace", "ml", "--selector", "app=x", "--endpoint", "http://x",
                                "--kubeconfig", "{kubeconfig}", "--kube-context", "nosuch"], ["'nosuch' is not in"]),
    "--selector existence only": ([*KUBE, "--namespace", "ml", "--selector", "app", "--endpoint", "http://x"],
                                  ["names no label value", "every pod"]),
    "--service not a Service name": ([*KUBE, "--namespace", "ml", "--selector", "app=x", "--endpoint", "http://x",
                                      "--service", "Ref_Svc"], ["--service", "Ref_Svc"]),
    "--fault-set local-only on kubernetes": ([*KUBE, "--namespace", "ml", "--selector", "app=x", "--endpoint",
                                              "http://x", "--fault-set", "spot_reclamation.provisioning_delay_s=3"],
                                             ["provisioning_delay_s", "local target only"]),
    "--expire-after not seconds": ([*KUBE, "--namespace", "ml", "--selector", "app=x", "--endpoint", "http://x",
                                    "--expire-after", "5m"], ["--expire-after", "whole seconds"]),
    "--container at an unreachable API": ([*KUBE, "--namespace", "ml", "--selector", "app=x", "--endpoint",
                                           "http://x", "--kubeconfig", "{kubeconfig}", "--kube-context", "fake",
                                           "--container", "server"], ["cannot reach the API server"]),
}
#: options that take no value, or whose every value is valid, or that need a reachable API
#: server before they mean anything: covered where noted.
NO_BAD_VALUE = {"--chaos-dry-run": "a flag", "--golden-model": "any model name",
                "--allow-cluster": "any UID; a cluster not on it is refused (tests/kube/test_kubernetes_rails.py)",
                "--allow-shared-nodes": "a flag", "--server-process": "any text; no match is refused at inject "
                "(tests/kube/test_kubernetes_target.py)",
                "--pipeline-deployment": "checked when pipeline_lag runs (tests/kube/test_kubernetes_target.py)"}


def our_options() -> set[str]:
    from inferchaos import plugin

    names: set[str] = set()

    class Group:
        def addoption(self, *opts: str, **_: object) -> None:
            names.update(opts)

    class Parser:
        def getgroup(self, *_: object, **__: object) -> Group:
            return Group()

    plugin.pytest_addoption(Parser())  # type: ignore[arg-type]
    return names


def test_the_tables_cover_every_pytest_option_of_ours():
    covered = {a for args, *_ in [*PYTEST_CASES.values(), *KUBE_CASES.values()] for a in args if a.startswith("--")}
    assert our_options() - covered - set(NO_BAD_VALUE) == set()


@pytest.mark.parametrize("case", list(KUBE_CASES))
def test_kubernetes_option_bad_input_is_one_line_exit_2_before_connecting(case, tmp_path):
    args, words = KUBE_CASES[case]
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
                          "users: [{name: u, user: {token: t}}]\ncontexts: [{name: staging, context: {cluster: c, "
                          "user: u}}, {name: fake, context: {cluster: c, user: u}}]\ncurrent-context: staging\n")
    places = {"kubeconfig": str(kubeconfig), "missing": str(tmp_path / "missing")}
    argv = [*PYTEST, "experiments/test_replica_crash.py", "--ledger", str(tmp_path / "ledger.jsonl"), *SHORT]
    env = {k: v for k, v in repo_env().items() if not k.startswith("INFERCHAOS_ALLOW") and k != "KUBERNETES_SERVICE_HOST"}
    res = subprocess.run(argv + fill(args, places), capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    out = res.stdout + res.stderr
    (line,) = {x.split("inferchaos: error:", 1)[1].strip(" !") for x in out.splitlines() if "inferchaos: error:" in x}
    for word in words:
        assert word in line, line
    assert "Traceback" not in out
    assert not (tmp_path / "ledger.jsonl").exists()


def pytest_case(case: str):  # type: ignore[no-untyped-def]
    args, words, gap = PYTEST_CASES[case]
    return pytest.param(case, marks=pytest.mark.xfail(strict=True, reason=gap)) if gap else case


@pytest.mark.parametrize("case", [pytest_case(c) for c in PYTEST_CASES])
def test_pytest_option_bad_input_is_one_line_exit_2_and_nothing_injected(case, cluster, places, tmp_path):
    args, words, _ = PYTEST_CASES[case]
    extra = fill(args, places)
    argv = [*PYTEST, "experiments/test_replica_crash.py", *SHORT]
    if "--state-dir" not in args:
        argv += ["--state-dir", places["live"]]
    if "--ledger" not in args:
        argv += ["--ledger", places["ledger"]]
    if "--chaos-report" not in args:
        argv += ["--chaos-report", str(tmp_path / "report")]
    before = touched(cluster)
    try:
        res = subprocess.run(argv + extra, capture_output=True, text=True, timeout=120, cwd=REPO, env=repo_env())
        if case in ASKS_THE_SERVER:  # found out in a session fixture: pytest reports that exit on stdout
            out = res.stdout + res.stderr
            assert res.returncode == 2 and "Traceback" not in out, out[-2000:]
            (line,) = {x.split("inferchaos: error:", 1)[1] for x in out.splitlines() if "inferchaos: error:" in x}
            assert all(word in line for word in words), line
        else:
            assert_one_error_line(res, words, prefix="Exit: ")
        assert not Path(places["ledger"]).exists(), "a ledger entry was written"
        assert not (tmp_path / "report" / "summary.json").exists()
        assert touched(cluster) == before
    finally:
        if Path(places["ledger"]).is_file() and Ledger(places["ledger"]).open_entries():
            subprocess.run([sys.executable, "-m", "inferchaos.cli", "recover", "--force", "--ledger",
                            places["ledger"]], capture_output=True, timeout=60, cwd=REPO)
