"""Undo tried as a security reviewer would: crafted ledgers, planted ConfigMaps, state dirs
someone else made. Each is refused or left alone with one line; nothing is signalled that
the suite did not start, no command runs, nothing outside the namespace is touched, and
the legitimate entries beside the hostile ones are still recovered.

The sentinels are real processes of this user (so that only the proof of the mark, not a
permission error, keeps them alive); the attacker is `nobody` where a file's owner matters.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from inferchaos.targets.local.processes import (MARK_ENV, boot_id, group_alive, new_mark, spawn, start_time)
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
NOBODY = pwd.getpwnam("nobody")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="planting files as another user needs root")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferchaos.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)


@pytest.fixture
def sentinel(tmp_path) -> Iterator[subprocess.Popen]:
    """A process of ours, in a group of its own, that the suite never started (no mark)."""
    proc = spawn([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "sentinel.log",
                 {k: v for k, v in os.environ.items() if k != MARK_ENV})
    wait_for(lambda: start_time(proc.pid) is not None, 10, "the sentinel started")
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def marked_sleeper(tmp_path) -> Iterator[tuple[subprocess.Popen, str]]:
    """A process the suite started: its mark in its environment (a legitimate entry's target)."""
    mark = new_mark("locust")
    proc = spawn([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "marked.log",
                 {**os.environ, MARK_ENV: mark})
    wait_for(lambda: start_time(proc.pid) is not None, 10, "the marked process started")
    yield proc, mark
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def entry(eid: str, undo: list[dict[str, Any]], **over: Any) -> dict[str, Any]:
    return {"id": eid, "event": "applied", "fault": "replica_hang", "wall": time.time(), "runner_pid": 1,
            "undo": undo, **over}


def write_ledger(path: Path, *entries: dict[str, Any], mode: int = 0o600) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    path.chmod(mode)
    return path


def recover(ledger: Path, *extra: str) -> subprocess.CompletedProcess:
    return cli("recover", "--ledger", str(ledger), "--force", *extra)


def alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None and group_alive(proc.pid)


# ------------------------------------------------------------------ crafted file ledgers
def test_a_kubeconfig_named_by_a_ledger_is_never_loaded(tmp_path):
    """Loading a kubeconfig runs its exec credential plugin: a ledger that names one, in a
    step or in an entry's target (the mirror into the cluster), must not get it loaded."""
    ran = tmp_path / "plugin-ran"
    evil = tmp_path / "evil-kubeconfig"
    evil.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "https://127.0.0.1:1"}}}}]
users: [{{name: u, user: {{exec: {{apiVersion: client.authentication.k8s.io/v1, command: sh,
  args: ["-c", "touch {ran}; echo '{{}}'"]}}}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    conn = {"kubeconfig": str(evil), "context": "x", "cluster": "uid-1"}
    ledger = write_ledger(
        tmp_path / "ledger.jsonl",
        entry("aaaa00000001", [{"op": "kube_node", "args": {"conn": conn, "node": "n", "run": "abc"}}]),
        entry("aaaa00000002", [], fault="spot_reclamation",
              target={"kind": "kubernetes", "namespace": "ml", "ledger": "abc", "connection": conn}))
    rec = recover(ledger)
    assert rec.returncode == 1, rec.stdout + rec.stderr
    assert "never a kubeconfig" in rec.stderr and "aaaa00000001" in rec.stderr
    assert not ran.exists(), "the kubeconfig's exec plugin ran"


def test_an_empty_or_forged_mark_ends_nothing(tmp_path, sentinel):
    ledger = write_ledger(
        tmp_path / "ledger.jsonl",
        entry("bbbb00000001", [{"op": "end_marked", "args": {"mark": ""}}]),
        entry("bbbb00000002", [{"op": "end_marked", "args": {"mark": "python"}}]),  # a word in every cmdline
        entry("bbbb00000003", [{"op": "end_marked", "args": {"mark": new_mark("locust")}}]))  # well-formed, unused
    rec = recover(ledger)
    assert rec.returncode == 1, rec.stdout + rec.stderr
    assert rec.stderr.count("is not a mark the suite makes: refused") == 2, rec.stderr
    assert "bbbb00000003: process: none running" in rec.stdout
    assert alive(sentinel), "a process the suite never started was ended"


def test_a_pid_with_its_true_start_time_is_not_enough(tmp_path, sentinel):
    """The ledger may name any live pid and read its start time from /proc: without the
    suite's mark in its environment nothing is sent to it."""
    ref = {"started": start_time(sentinel.pid), "mark": new_mark("cluster"), "boot": boot_id()}
    ledger = write_ledger(
        tmp_path / "ledger.jsonl",
        entry("cccc00000001", [{"op": "signal_process", "args": {"pid": sentinel.pid, "sig": "SIGKILL", **ref}}]),
        entry("cccc00000002", [{"op": "end_group", "args": {"pgid": sentinel.pid, **ref}}]),
        entry("cccc00000003", [{"op": "signal_process", "args": {"pid": sentinel.pid, "sig": "SIGKILL",
                                                                  "started": start_time(sentinel.pid)}}]))  # old shape
    rec = recover(ledger)
    assert "carries no mark of the suite's, left alone" in rec.stdout, rec.stdout + rec.stderr
    assert f"process {sentinel.pid}: gone, nothing to do" in rec.stdout
    assert "missing boot, mark: refused" in rec.stderr
    time.sleep(0.3)
    assert alive(sentinel)


def test_paths_and_proxies_outside_the_suites_own_are_refused(tmp_path):
    """restore_desired may not put another library into LD_PRELOAD; clear_toxics may not send
    to anything but the recorded loopback proxy; disarm_cuda deletes only a suite trigger."""
    import http.server
    import threading

    hits: list[str] = []

    class Record(http.server.BaseHTTPRequestHandler):
        def do_DELETE(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.2", 0), Record)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state = tmp_path / "cluster"
    state.mkdir(mode=0o700)
    (state / "spec.json").write_text("{}")
    (state / "state.json").write_text(json.dumps({
        "phase": "ready", "state_dir": str(state), "supervisor_pid": 1, "supervisor_pgid": 1, "spec": {},
        "proxy_url": f"http://127.0.0.2:{server.server_port}", "via_proxy": {"feature_store": "x"}}))
    (state / "desired.json").write_text("{}")
    precious = tmp_path / "not-a-state-dir" / "cuda" / "device0.trigger"
    precious.parent.mkdir(parents=True)
    precious.write_text("keep me")
    ledger = write_ledger(
        tmp_path / "ledger.jsonl",
        entry("dddd00000001", [{"op": "restore_desired", "args": {"state_dir": str(state), "values": {
            "cuda_faults": {"0": {"shim": str(tmp_path / "evil.so"), "trigger": str(state / "cuda/device0.trigger")}}}}}]),
        entry("dddd00000002", [{"op": "clear_toxics", "args": {"state_dir": str(state), "route": "feature_store"}}]),
        entry("dddd00000003", [{"op": "clear_toxics", "args": {"proxy_url": "http://169.254.169.254", "route": "x"}}]),
        entry("dddd00000004", [{"op": "disarm_cuda", "args": {"state_dir": str(precious.parent.parent),
                                                               "device": 0}}]),
        entry("dddd00000005", [{"op": "disarm_cuda", "args": {"trigger": str(precious)}}]),
        entry("dddd00000006", [{"op": "stop_cluster", "args": {"state_dir": "relative/dir"}}]))
    try:
        rec = recover(ledger)
    finally:
        server.shutdown()
    out = rec.stdout + rec.stderr
    assert rec.returncode == 1, out
    assert "names another shim or trigger than the suite's own: refused" in out
    assert "is not at 127.0.0.1, where the suite binds it: refused" in out
    assert "unexpected proxy_url" in out and "unexpected trigger" in out
    assert "holds no cluster spec, not a state dir of the suite's: refused" in out
    assert "not an absolute path: refused" in out
    assert json.loads((state / "desired.json").read_text()) == {}
    assert hits == [] and precious.read_text() == "keep me"


def test_malformed_entries_are_refused_one_line_each_and_the_rest_recovered(tmp_path, marked_sleeper):
    proc, mark = marked_sleeper
    ledger = write_ledger(
        tmp_path / "ledger.jsonl",
        entry("eeee00000001", [], wall="yesterday"),
        entry("eeee00000002", [], target={"connection": "x"}, runner_pid="1"),
        entry("eeee00000003", [], event="applied; rm -rf /"),
        {"id": "eeee00000004", "event": "applied"},
        entry("eeee00000005", [], surprise=1),
        entry("eeee00000007", [], operator="eve\x1b]0;owned\x07"),
        entry("eeee00000006", [{"op": "end_marked", "args": {"mark": mark, "what": "locust"}}], fault="load"))
    rec = recover(ledger)
    assert rec.returncode == 1, rec.stdout + rec.stderr
    refused = [line for line in rec.stderr.splitlines() if "not a ledger entry" in line]
    assert len(refused) == 6, rec.stderr
    assert "load eeee00000006: reverted" in rec.stdout
    wait_for(lambda: proc.poll() is not None, 10, "the legitimately marked process ended")


def test_terminal_escapes_in_a_ledger_are_printed_not_obeyed(tmp_path):
    ledger = write_ledger(tmp_path / "ledger.jsonl",
                          entry("ffff00000001", [{"op": "end_marked", "args": {"mark": "\x1b]0;owned\x07"}}]))
    rec = recover(ledger)
    assert rec.returncode == 1 and "\x1b" not in rec.stdout + rec.stderr, rec.stderr
    assert "holds control characters or is too long: refused" in rec.stderr


# ------------------------------------------------------------------ files others could have written
@as_root
@pytest.mark.parametrize("case", ["owned by nobody", "group-writable", "a symlink", "a world-writable dir"])
def test_a_ledger_others_could_have_written_is_refused_whole(tmp_path, marked_sleeper, case):
    proc, mark = marked_sleeper
    good = entry("abab00000001", [{"op": "end_marked", "args": {"mark": mark}}], fault="load")
    where = tmp_path / "ledgers"
    where.mkdir(mode=0o700)
    path = where / "ledger.jsonl"
    if case == "owned by nobody":
        write_ledger(path, good)
        os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    elif case == "group-writable":
        write_ledger(path, good, mode=0o620)
    elif case == "a symlink":
        write_ledger(tmp_path / "elsewhere.jsonl", good)
        path.symlink_to(tmp_path / "elsewhere.jsonl")
    else:
        where.chmod(0o777)  # not sticky: anyone could have replaced the file
        write_ledger(path, good)
    rec = recover(path)
    assert rec.returncode == 2, rec.stdout + rec.stderr
    assert len(rec.stderr.strip().splitlines()) == 1 and "refused" in rec.stderr, rec.stderr
    assert rec.stdout == ""
    time.sleep(0.3)
    assert proc.poll() is None, "nothing is done on a ledger that is refused"


@as_root
def test_a_state_dir_made_by_another_user_is_refused(tmp_path, sentinel):
    """The attacker, as nobody, makes the state dir first, with a state file naming the
    sentinel's group as the supervisor's: neither `up` nor `down` believes it."""
    import shutil
    import tempfile

    planted = Path(tempfile.mktemp(prefix="ic-", dir="/tmp"))  # the README's game-day place; nobody gets there first
    state = json.dumps({"phase": "ready", "state_dir": str(planted), "supervisor_pid": sentinel.pid,
                        "supervisor_pgid": sentinel.pid, "spec": {}})
    attacker = f"mkdir -m 777 {planted} && printf '%s' '{state}' > {planted}/state.json"
    subprocess.run(["/bin/sh", "-c", attacker], check=True, timeout=30, cwd="/",
                   preexec_fn=lambda: (os.setgid(NOBODY.pw_gid), os.setuid(NOBODY.pw_uid)))
    try:
        assert planted.stat().st_uid == NOBODY.pw_uid
        for verb in (["down"], ["up", "--detach"], ["status"]):
            res = cli(*verb, "--state-dir", str(planted))
            assert res.returncode == 2, (verb, res.stdout, res.stderr)
            assert len(res.stderr.strip().splitlines()) == 1 and "refused" in res.stderr, res.stderr
        assert alive(sentinel)
        assert not (planted / "spec.json").exists(), "nothing was started there"
    finally:
        shutil.rmtree(planted, ignore_errors=True)


def test_a_state_file_naming_groups_the_suite_never_started_signals_nothing(tmp_path, sentinel):
    """Our own state dir, a state file whose groups are not the cluster's (a reboot, a pgid
    reused): `down` signals none of them."""
    state = tmp_path / "ic"
    state.mkdir(mode=0o700)
    (state / "spec.json").write_text("{}")
    (state / "state.json").write_text(json.dumps({
        "phase": "ready", "state_dir": str(state), "supervisor_pid": sentinel.pid, "supervisor_pgid": sentinel.pid,
        "spec": {}, "mark": new_mark("cluster"), "boot": boot_id(),
        "services": [{"name": "haproxy", "pid": sentinel.pid, "pgid": sentinel.pid, "port": None, "log": ""}]}))
    res = cli("down", "--state-dir", str(state))
    assert res.returncode == 1 and f"process group(s) {sentinel.pid} do not carry" in res.stderr, res.stderr
    time.sleep(0.3)
    assert alive(sentinel)
    (state / "state.json").write_text(json.dumps({
        "phase": "ready", "state_dir": str(state), "supervisor_pid": sentinel.pid, "supervisor_pgid": sentinel.pid,
        "spec": {}}))  # no mark, no boot: written before this version, or by hand
    res = cli("down", "--state-dir", str(state))
    assert res.returncode == 1 and "left alone" in res.stderr and alive(sentinel), res.stdout + res.stderr


def test_a_state_dir_the_suite_creates_is_private(tmp_path):
    from inferchaos.targets.ownership import private_dir

    made = private_dir(tmp_path / "a" / "b", "state dir")
    assert (made.stat().st_mode & 0o777) == 0o700 and (made.parent.stat().st_mode & 0o777) == 0o700


# ------------------------------------------------------------------ planted ConfigMaps
@pytest.fixture
def guarded(tmp_path):
    """The fake API server enforcing deploy/'s RBAC: the runner's token, and an admin's."""
    from tests.fakekube import FakeKube
    from tests.support.kubeseed import RUNNER_TOKEN, runner_policy

    policy = runner_policy("ml")
    policy["policy"].add({"kind": "ClusterRole", "metadata": {"name": "admin-all"},
                          "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})
    policy["policy"].add({"kind": "ClusterRoleBinding", "metadata": {"name": "admin-all"},
                          "roleRef": {"kind": "ClusterRole", "name": "admin-all"},
                          "subjects": [{"kind": "User", "name": "admin"}]})
    policy["tokens"]["admin-token"] = "admin"
    with FakeKube(**policy) as fake:
        yield fake, RUNNER_TOKEN


def test_a_configmap_planted_with_the_runners_rbac_commands_nothing(guarded, tmp_path, marked_sleeper):
    """The reviewer's reproduction: as the runner's service account, a ConfigMap in `ml`
    naming kube-system/coredns, a local process and a file; the admin's nightly
    `recover --expired` refuses each with one line, touches nothing outside `ml`, still
    recovers a legitimate run beside them, and still sweeps."""
    from kubernetes import client

    from inferchaos.targets.kubernetes import Connection
    from inferchaos.targets.kubernetes.nodes import RUN, iso
    from tests.support.kubeseed import CONTEXT, NS, kubeconfig, seed

    fake, runner_token = guarded
    proc, mark = marked_sleeper
    uid = seed(fake, {"node-a": ["ref-1"]})
    fake.add("apps", "v1", "deployments", {
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"k": "dns"}},
                 "template": {"metadata": {"labels": {"k": "dns"}}, "spec": {"containers": [{"name": "c",
                                                                                              "image": "dns"}]}}}},
        "kube-system")
    # a legitimate run's change, its runner lost: the pipeline scaled to 0, marked by run 0123456789ab
    labels = {"app": "feature-pipeline"}
    fake.add("apps", "v1", "deployments", {
        "metadata": {"name": "feature-pipeline", "namespace": NS,
                     "annotations": {RUN: "0123456789ab", "inferchaos.io/restore-replicas": "1",
                                     "inferchaos.io/expires-at": iso(time.time() + 600)}},
        "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "p", "image": "p"}]}}}},
        NS)
    conn = {"context": CONTEXT, "cluster": uid}
    ran = tmp_path / "ran"

    def cm(name: str, lines: list[dict[str, Any]], operator: str = "mallory") -> dict[str, Any]:
        return {"metadata": {"name": f"inferchaos-ledger-{name}", "namespace": NS,
                             "labels": {"app.kubernetes.io/managed-by": "inferchaos", "inferchaos.io/ledger": "run"},
                             "annotations": {"inferchaos.io/operator": operator,
                                             "inferchaos.io/expires-at": iso(time.time() - 60)}},
                "data": {"entries.jsonl": "".join(json.dumps(x) + "\n" for x in lines)}}

    def target(run: str) -> dict[str, Any]:
        return {"kind": "kubernetes", "namespace": NS, "ledger": run, "connection": conn}

    planted = cm("feedface00", [
        entry("1a0000000001", [{"op": "kube_scale", "args": {"conn": conn, "namespace": "kube-system",
                                                             "deployment": "coredns", "replicas": 0, "run": "feedface00"}}],
              target=target("feedface00")),
        entry("1a0000000002", [{"op": "end_marked", "args": {"mark": mark}}], target=target("feedface00")),
        entry("1a0000000003", [{"op": "stop_cluster", "args": {"state_dir": str(tmp_path)}}], target=target("feedface00")),
        entry("1a0000000004", [{"op": "kube_delete_custom", "args": {
            "conn": conn, "group": "apps", "version": "v1", "namespace": NS, "plural": "deployments",
            "name": "ref", "run": "feedface00"}}], target=target("feedface00")),
        entry("1a0000000005", [], wall="soon", target=target("feedface00")),
        entry("1a0000000006", [{"op": "kube_scale", "args": {"conn": conn, "namespace": NS, "deployment": "ref",
                                                             "replicas": 0, "run": "feedface00"}}],
              target=target("feedface00")),
        entry("1a0000000007", [], target={**target("feedface00"), "namespace": "kube-system"}),
    ], operator="mallory\x1b[2J")
    honest = cm("0123456789", [entry("0123456789ab", [{"op": "kube_scale", "args": {
        "conn": conn, "namespace": NS, "deployment": "feature-pipeline", "replicas": 1, "run": "0123456789ab"}}],
        fault="pipeline_lag", target=target("0123456789"))], operator="nightly")
    runner = client.CoreV1Api(Connection(str(kubeconfig(fake, tmp_path, token=runner_token)), CONTEXT).api_client())
    for body in (planted, honest):
        runner.create_namespaced_config_map(NS, body)  # the runner's RBAC allows exactly this
    (tmp_path / "admin").mkdir()
    admin_kubeconfig = kubeconfig(fake, tmp_path / "admin", token="admin-token")
    fake.clear_requests()
    rec = cli("recover", "--expired", "--ledger", str(tmp_path / "admin.jsonl"), "--kubeconfig", str(admin_kubeconfig),
              "--allow-cluster", uid, "--namespace", NS, "--allow-namespace", NS, "--force")
    out = rec.stdout + rec.stderr
    assert rec.returncode == 1, out
    for eid in ("1a0000000001", "1a0000000002", "1a0000000003", "1a0000000007"):
        assert f"refused replica_hang {eid}" in rec.stderr, (eid, rec.stderr)
    assert "deployments.apps/v1: not a kind the suite creates: refused" in rec.stderr
    assert "not a ledger entry" in rec.stderr  # the string wall
    assert "deployment ref: carries no mark of run feedface00, left alone" in rec.stdout
    assert "\x1b" not in out and "mallory\\x1b[2J" in rec.stdout
    # nothing outside ml was touched, nothing but the honest scale-back was changed
    writes = [(r.method, r.path) for r in fake.requests() if r.method not in ("GET",)]
    assert not any("kube-system" in p for _, p in writes), writes
    assert fake.get("apps", "v1", "deployments", "coredns", "kube-system")["spec"]["replicas"] == 2
    assert fake.get("apps", "v1", "deployments", "ref", NS)["spec"]["replicas"] == 1
    assert proc.poll() is None and not ran.exists()
    # the legitimate run beside them: recovered; and the sweep ran after all of it
    assert fake.get("apps", "v1", "deployments", "feature-pipeline", NS)["spec"]["replicas"] == 1
    assert "pipeline_lag 0123456789ab: reverted" in rec.stdout
    assert "expired change(s) undone in cluster" in rec.stdout
