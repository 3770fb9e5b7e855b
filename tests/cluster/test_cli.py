"""Bad input to the CLI: one clear line, exit code 2, nothing left running."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import inferchaos, one_line
from tests.support.waiting import wait_for
from inferchaos.targets.local.state import read_state
from tests.support.leftovers import assert_nothing_left, live_groups

VENV_BIN = str(Path(sys.executable).parent)


@pytest.mark.parametrize(
    "args, says",
    [
        (["up", "--bogus"], "unrecognized arguments: --bogus"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["up", "--replicas", "zero"], "argument --replicas: invalid int value: 'zero'"),
        (["up", "--replicas", "0"], "replicas must be at least 1"),
        (["up", "--warm-pool", "-1"], "warm pool must be 0 or more"),
        (["up", "--provisioning-delay", "-2"], "provisioning delay must be 0 or more"),
        (["up", "--oom", "explode"], "argument --oom: invalid choice"),
        (["up", "--port", "70000"], "port must be 0..65535"),
        (["up", "--replica-cmd", "server --port {prot}"], "bad --replica-cmd"),
        (["up", "--replica-cmd", "server --port 80"], "must contain {port}"),
        (["status", "--bogus"], "unrecognized arguments"),
        (["down", "--bogus"], "unrecognized arguments"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path, args, says):
    res = inferchaos(*args, "--state-dir", str(tmp_path / "c")) if args[0] == "up" and "--bogus" not in args \
        else inferchaos(*args)
    assert res.returncode == 2, res
    assert says in one_line(res.stderr)
    assert not (tmp_path / "c" / "state.json").exists()


def test_port_in_use_is_refused_and_nothing_starts(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = inferchaos("up", "--detach", "--port", str(port), "--state-dir", str(tmp_path / "c"))
    assert res.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in one_line(res.stderr)
    assert_nothing_left(tmp_path / "c")


def test_haproxy_missing_is_one_line_with_the_fix(tmp_path):
    env = {**os.environ, "PATH": VENV_BIN}  # python is here; haproxy is not
    res = inferchaos("up", "--detach", "--state-dir", str(tmp_path / "c"), env=env)
    assert res.returncode == 2
    assert "HAProxy not found on PATH" in one_line(res.stderr)
    assert "apt-get install -y haproxy" in res.stderr
    assert_nothing_left(tmp_path / "c")


def test_replica_command_that_exits_at_once(tmp_path):
    res = inferchaos("up", "--detach", "--state-dir", str(tmp_path / "c"),
                     "--replica-cmd", "sh -c 'echo model file missing >&2; exit 3' {port}")
    assert res.returncode == 2
    # progress lines ("starting: 0/3 replicas ready") may come first; the error is one line
    line = one_line("\n".join(x for x in res.stderr.splitlines() if "starting:" not in x))
    assert "exited at once with code 3" in line and "model file missing" in line
    assert_nothing_left(tmp_path / "c")


def test_status_and_down_without_a_cluster(tmp_path):
    res = inferchaos("status", "--state-dir", str(tmp_path))
    assert res.returncode == 1 and "no local cluster" in one_line(res.stderr)
    res = inferchaos("down", "--state-dir", str(tmp_path))
    assert res.returncode == 0 and "nothing to stop" in res.stdout


@pytest.mark.cluster
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["ctrl-c", "sigterm", "sigkill"])
def test_foreground_up_stops_everything_when_it_ends(tmp_path, sig):
    state_dir = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-m", "inferchaos.cli", "up", "--replicas", "1", "--state-dir",
                             str(state_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (s := read_state(state_dir)) is not None and s.phase == "ready", 60, "the cluster ready")
        status = inferchaos("status", "--state-dir", str(state_dir), "--json")
        assert status.returncode == 0
        doc = json.loads(status.stdout)
        assert doc["phase"] == "ready" and len(doc["replicas"]) == 1 and doc["lb_servers"][0]["state"] in (
            "running", "starting", "stopped")
        proc.send_signal(sig)
        proc.wait(60)
        if sig != signal.SIGKILL:
            assert proc.returncode == 0
        wait_for(lambda: not live_groups(state_dir), 30, "every process group gone")
    finally:
        proc.kill()
        proc.wait()
    assert_nothing_left(state_dir)


@pytest.mark.cluster
def test_up_prometheus_asks_the_cluster_for_it_and_status_shows_where(tmp_path):
    state_dir = tmp_path / "c"
    res = inferchaos("up", "--detach", "--prometheus", "--replicas", "1", "--state-dir", str(state_dir))
    try:
        assert res.returncode == 0, res.stderr
        assert json.loads((state_dir / "spec.json").read_text())["prometheus"] is True
        state = read_state(state_dir)
        status = inferchaos("status", "--state-dir", str(state_dir))
        assert status.returncode == 0, status.stderr
        url = getattr(state, "prometheus_url", None)
        if shutil.which("prometheus"):  # `make setup` installs it where it can
            assert url, "the cluster runs Prometheus when asked and the binary is there"
        if url:
            assert f"prometheus: {url}" in status.stdout and f"Prometheus     {url}" in res.stdout
        else:
            assert "prometheus:" not in status.stdout
    finally:
        inferchaos("down", "--state-dir", str(state_dir))
    assert_nothing_left(state_dir)
    plain = tmp_path / "plain"
    assert inferchaos("up", "--detach", "--replicas", "1", "--state-dir", str(plain)).returncode == 0
    try:
        assert json.loads((plain / "spec.json").read_text())["prometheus"] is False
    finally:
        inferchaos("down", "--state-dir", str(plain))
    assert_nothing_left(plain)
