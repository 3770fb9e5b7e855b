"""A real Prometheus for the local cluster: scrapes given targets every second.

Probes that read PromQL should be tested against the real engine (its rate() extrapolation,
histogram_quantile, staleness markers and error answers are what fleets live with), not
against a fake that agrees with us. This starts the `prometheus` binary on a free loopback
port, in a process group of its own, with storage in a directory it owns, and ends it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Sequence

import httpx

from inferchaos.ground.errors import ClusterStartError
from inferchaos.ground.ports import free_port
from inferchaos.targets.local.processes import end_groups, group_alive, service_env, spawn


def find_prometheus() -> str:
    path = shutil.which("prometheus")
    if path is None:
        raise ClusterStartError(
            "Prometheus not found on PATH: install it (Debian/Ubuntu: apt-get install -y prometheus)"
        )
    return path


def render_config(targets: Sequence[str] = (), interval_s: float = 1.0, job: str = "inferchaos",
                  file_sd: Sequence[str] = (), extra_jobs: dict[str, Sequence[str]] | None = None) -> str:
    """The config file's text. JSON is YAML, so no YAML writer is needed. `file_sd`: globs
    of target files Prometheus re-reads when they change (replicas come and go)."""
    interval = f"{int(interval_s * 1000)}ms"
    job_config: dict = {"job_name": job, "metrics_path": "/metrics"}
    if targets:
        job_config["static_configs"] = [{"targets": list(targets)}]
    if file_sd:
        job_config["file_sd_configs"] = [{"files": list(file_sd), "refresh_interval": interval}]
    jobs = [job_config] + [{"job_name": name, "metrics_path": "/metrics", "static_configs": [{"targets": list(t)}]}
                           for name, t in (extra_jobs or {}).items()]
    return json.dumps({
        "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }, indent=1)


def prometheus_argv(binary: str, config: Path, data_dir: Path, port: int) -> list[str]:
    return [binary, f"--config.file={config}", f"--storage.tsdb.path={data_dir}",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1d", "--log.level=warn"]


def write_targets(path: Path, groups: list[dict]) -> bool:
    """Write a file_sd target file atomically, only when it changed (Prometheus watches it)."""
    text = json.dumps(groups, indent=1, sort_keys=True)
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


class LocalPrometheus:
    """One Prometheus process. `targets` are "host:port" strings serving /metrics."""

    def __init__(self, targets: Sequence[str], state_dir: Path | str | None = None,
                 interval_s: float = 1.0, job: str = "inferchaos") -> None:
        if not targets:
            raise ValueError("Prometheus needs at least one scrape target")
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.targets = tuple(targets)
        self.interval_s = interval_s
        self.job = job
        self._owns_dir = state_dir is None
        #: made at start when not given, so a failed start leaves no directory behind.
        self.state_dir = None if state_dir is None else Path(state_dir).resolve()
        self.port: int | None = None
        self.pgid: int | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise ClusterStartError("Prometheus is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        if self.state_dir is None:
            raise ClusterStartError("Prometheus is not started")
        return self.state_dir / "prometheus.log"

    def start(self, timeout_s: float = 30.0) -> LocalPrometheus:
        binary = find_prometheus()
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="inferchaos-prom-")).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        config = self.state_dir / "prometheus.yml"
        config.write_text(render_config(self.targets, self.interval_s, self.job))
        self.port = free_port()
        argv = prometheus_argv(binary, config, self.state_dir / "data", self.port)
        proc = self._proc = spawn(argv, self.log_path, service_env())
        self.pgid = proc.pid  # start_new_session: the child leads its own group
        try:
            self._wait_ready(proc, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, proc: subprocess.Popen, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=1.0) as client:
            while True:
                if proc.poll() is not None:
                    raise ClusterStartError(f"Prometheus exited with code {proc.returncode} at start: "
                                            f"{self._log_tail()}")
                try:
                    if client.get(f"{self.url}/-/ready").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ClusterStartError(f"Prometheus was not ready in {timeout_s:.0f}s (see {self.log_path})")
                time.sleep(0.1)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace").strip().splitlines()[-1][:300]
        except (OSError, IndexError):
            return "no log"

    def targets_up(self) -> int:
        """How many scrape targets Prometheus last scraped successfully."""
        resp = httpx.get(f"{self.url}/api/v1/targets", params={"state": "active"}, timeout=5.0)
        resp.raise_for_status()
        return sum(t.get("health") == "up" for t in resp.json()["data"]["activeTargets"])

    def running(self) -> bool:
        return self.pgid is not None and group_alive(self.pgid)

    def stop(self, grace_s: float = 10.0) -> None:
        """End the process group (SIGTERM, then SIGKILL at the deadline); remove the
        storage when the directory was ours. Safe to call twice."""
        if self.pgid is not None:
            end_groups([self.pgid], grace_s=grace_s)
        if self._proc is not None:
            self._proc.poll()  # reap it, so no zombie is left
        if self._owns_dir and self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> LocalPrometheus:
        if self.pgid is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
