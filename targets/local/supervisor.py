"""The supervisor: keeps the local cluster at its desired state, like a ReplicaSet.

It owns every process of the cluster (each in a process group of its own), points
HAProxy's slots at replicas, replaces a dead replica after the provisioning delay (or at
once from the warm pool), and records everything in `state.json`. It does not hide
failures from the load balancer: a dead replica's slot keeps pointing at the dead port
until its replacement exists, so HAProxy's own checks must notice the death.

Run as `python -m inferchaos.targets.local.supervisor --state-dir D [--owner-pid PID]`, with the
spec in `D/spec.json` (written by `LocalCluster`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from inferchaos.ground import native
from inferchaos.ground.errors import ClusterStartError, UsageError
from inferchaos.targets.local import haproxy, prometheus
from inferchaos.targets.local.autoscaler import ScaleLoop, metric_sum, policy_from
from inferchaos.ground.ports import free_port, free_ports, port_in_use
from inferchaos.targets.local.control import read_desired
from inferchaos.targets.local.processes import (MARK_ENV, boot_id, end_groups, new_mark, pid_alive, replica_env,
                                                 service_env, signal_group, spawn, valid_mark)
from inferchaos.targets.local.spec import ClusterSpec
from inferchaos.targets.local.state import ClusterState, ReplicaRecord, ServiceRecord, write_state
from inferchaos.targets.local.vgpu import VirtualDevice

TICK_S = 0.2
SERVICE_START_TIMEOUT_S = 20.0
TEARDOWN_GRACE_S = 3.0


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} supervisor: {msg}", flush=True)


def log_tail(path: Path | str, lines: int = 1) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) if text else "(no output)"


@dataclass
class Pending:
    """A replica to start once the provisioning delay has passed (a node being acquired).
    The delay is read when checking, not fixed when asking, so an undo that restores the
    delay also brings the replacement forward."""

    since: float
    slot: int | None


def cuda_fault_env(faults: dict, device: int, environ: "os._Environ[str] | dict[str, str]") -> dict[str, str]:
    """The environment a replica starting on `device` gets from a `cuda_errors` fault on it
    (desired `cuda_faults`: device -> {shim, trigger}): the shim preloaded in front of
    whatever the command preloads already, and where its trigger is."""
    fault = faults.get(str(device))
    if not fault:
        return {}
    preload = " ".join(p for p in (fault["shim"], environ.get("LD_PRELOAD", "")) if p)
    return {"LD_PRELOAD": preload, "INFERCHAOS_CUDA_TRIGGER": fault["trigger"]}


class Supervisor:
    def __init__(self, spec: ClusterSpec, state_dir: Path, owner_pid: int | None = None) -> None:
        self.spec = spec
        self.dir = state_dir.resolve()
        self.owner_pid = owner_pid
        self.logs = self.dir / "logs"
        self.vgpu_dir = self.dir / "vgpu"
        if not valid_mark(os.environ.get(MARK_ENV)):  # started by hand: its children are marked all the same
            os.environ[MARK_ENV] = new_mark("cluster")
        self.state = ClusterState(
            phase="starting", state_dir=str(self.dir), supervisor_pid=os.getpid(),
            supervisor_pgid=os.getpgrp(), spec=spec.to_dict(), vgpu_dir=str(self.vgpu_dir),
            mark=os.environ[MARK_ENV], boot=boot_id(),
        )
        self.procs: dict[str, subprocess.Popen] = {}
        self.pending: list[Pending] = []
        self.counter = 0
        self.retiring: set[str] = set()
        self._started_mono: dict[str, float] = {}
        self.stopping = asyncio.Event()
        self.admin: haproxy.AdminSocket | None = None
        self.http: aiohttp.ClientSession | None = None
        self.scaling = ScaleLoop()
        self.cudart = self._cudart()

    @staticmethod
    def _cudart() -> str | None:
        """The stand-in CUDA runtime our replicas call per batch, built once (cached); without
        a C compiler they make no CUDA calls and `cuda_errors` says why it cannot run."""
        try:
            return str(native.path("cudart"))
        except UsageError as exc:
            log(f"replicas make no CUDA calls: {exc}")
            return None

    # ------------------------------------------------------------------ lifecycle
    async def main(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(sig, self.stopping.set)
        self._save()
        code = 0
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5))
        try:
            await self._bring_up()
            if not self.stopping.is_set():
                self.state.phase = "ready"
                self._save()
                log(f"ready: {len(self.state.active())} replicas behind {self.state.lb_url}")
                await self._reconcile_until_stopped()
        except ClusterStartError as exc:
            self.state.phase, self.state.error, code = "failed", str(exc), 2
            log(f"failed: {exc}")
        except Exception as exc:  # noqa: BLE001 - recorded, then everything is torn down
            self.state.phase, self.state.error, code = "failed", f"{type(exc).__name__}: {exc}", 1
            log(f"crashed: {exc!r}")
        finally:
            await self.http.close()
            self._teardown()
        return code

    async def _bring_up(self) -> None:
        binary = haproxy.find_haproxy()
        if self.spec.lb_port and port_in_use(self.spec.lb_port):
            raise ClusterStartError(f"port {self.spec.lb_port} on 127.0.0.1 is already in use")
        shutil.rmtree(self.vgpu_dir, ignore_errors=True)
        py = [sys.executable, "-m"]
        ms_port, fs_port = free_ports(2)
        self._start_service("modelstore", py + ["inferchaos.targets.local.modelstore", "--port", str(ms_port)], ms_port)
        self._start_service("featurestore", py + ["inferchaos.targets.local.featurestore", "--port", str(fs_port)], fs_port)
        self.state.model_store_url = f"http://127.0.0.1:{ms_port}"
        self.state.feature_store_url = f"http://127.0.0.1:{fs_port}"
        await self._wait_healthy("modelstore", f"{self.state.model_store_url}/health")
        await self._wait_healthy("featurestore", f"{self.state.feature_store_url}/health")
        # Replicas reach both stores through the dependency proxy, where faults add latency,
        # bandwidth limits, stalls and resets; the pipeline writes to the store directly.
        routes = {"model_store": ms_port, "feature_store": fs_port}
        proxy_port, *ports = free_ports(1 + len(routes))
        listen = dict(zip(routes, ports))
        self._start_service("depproxy", py + ["inferchaos.targets.local.depproxy", "--control-port", str(proxy_port)] + [
            arg for name, up in routes.items() for arg in ("--route", f"{name}={listen[name]}:127.0.0.1:{up}")],
            proxy_port)
        self.state.proxy_url = f"http://127.0.0.1:{proxy_port}"
        self.state.via_proxy = {name: f"http://127.0.0.1:{port}" for name, port in listen.items()}
        await self._wait_healthy("depproxy", f"{self.state.proxy_url}/health")
        self._start_service("pipeline", py + [
            "inferchaos.targets.local.pipeline", "--feature-store", self.state.feature_store_url,
            "--interval-s", str(self.spec.feature_interval_s)], None)
        await self._start_haproxy(binary)
        if self.spec.prometheus:
            await self._start_prometheus()
        for slot in range(1, self.spec.replicas + 1):
            self._spawn_replica(slot)
        for _ in range(self.spec.warm_pool):
            self._spawn_replica(None)
        self._save()
        await self._wait_all_ready()

    async def _start_haproxy(self, binary: str) -> None:
        lb_port = self.spec.lb_port or free_port()
        stats_port, plain_port = [p for p in free_ports(3) if p != lb_port][:2]
        sock = self.dir / "haproxy.sock"
        cfg = self.dir / "haproxy.cfg"
        cfg.write_text(haproxy.render_config(lb_port, stats_port, sock, self.spec.slots, self.spec.ready_path,
                                             plain_port))
        haproxy.check_config(binary, cfg)
        self._start_service("haproxy", [binary, "-db", "-f", str(cfg)], lb_port)
        self.state.lb_url = f"http://127.0.0.1:{lb_port}"
        self.state.plain_lb_url = f"http://127.0.0.1:{plain_port}"
        self.state.stats_url = f"http://127.0.0.1:{stats_port}"
        self.state.haproxy_socket = str(sock)
        self.admin = haproxy.AdminSocket(sock)
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while True:
            self._fail_if_exited("haproxy")
            try:
                self.admin.servers()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ClusterStartError("HAProxy did not open its admin socket in time") from None
                await asyncio.sleep(0.05)

    @property
    def prometheus_dir(self) -> Path:
        return self.dir / "prometheus"

    async def _start_prometheus(self) -> None:
        """Replicas come and go on new ports: Prometheus follows them through a file_sd
        target file that every state change rewrites (`_scrape_targets`)."""
        binary = prometheus.find_prometheus()
        port, config = free_port(), self.prometheus_dir / "prometheus.yml"
        self._scrape_targets()
        config.write_text(prometheus.render_config(
            job="replicas", file_sd=[str(self.prometheus_dir / "targets" / "*.json")],
            extra_jobs={"haproxy": [self.state.stats_url.removeprefix("http://")]} if self.state.stats_url else None))
        self._start_service("prometheus", prometheus.prometheus_argv(binary, config, self.prometheus_dir / "data", port),
                            port)
        self.state.prometheus_url = f"http://127.0.0.1:{port}"
        await self._wait_healthy("prometheus", f"{self.state.prometheus_url}/-/ready")

    def _scrape_targets(self) -> None:
        groups = [{"targets": [f"127.0.0.1:{r.port}"],
                   "labels": {"replica": r.name, "slot": f"r{r.slot}" if r.slot else "warm"}}
                  for r in self.state.replicas if r.phase in ("starting", "ready")]
        prometheus.write_targets(self.prometheus_dir / "targets" / "replicas.json", groups)

    async def _wait_all_ready(self) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout_s
        while not self.stopping.is_set():
            for rec in list(self.state.replicas):
                code = self.procs[rec.name].poll()
                if code is not None:
                    raise ClusterStartError(
                        f"replica {rec.name} exited at once with code {code}: {log_tail(rec.log)}"
                    )
            await self._poll_readiness()
            if all(r.phase == "ready" for r in self.state.replicas) and self._lb_all_up():
                return
            if time.monotonic() > deadline:
                waiting = [r.name for r in self.state.replicas if r.phase != "ready"]
                raise ClusterStartError(
                    f"replicas {', '.join(waiting)} not ready after {self.spec.startup_timeout_s:.0f}s "
                    f"(see {self.logs})"
                )
            await asyncio.sleep(TICK_S)

    def _lb_all_up(self) -> bool:
        assert self.admin is not None
        up = {s.name for s in self.admin.servers() if s.up}
        return all(haproxy.slot_name(r.slot) in up for r in self.state.active() if r.slot is not None)

    async def _reconcile_until_stopped(self) -> None:
        while not self.stopping.is_set():
            if self.owner_pid and not pid_alive(self.owner_pid):
                log(f"owner process {self.owner_pid} is gone: stopping the cluster")
                return
            changed = self._reap()
            changed |= await self._autoscale()
            changed |= self._converge()
            changed |= self._start_due()
            changed |= await self._poll_readiness()
            if changed:
                self._save()
            try:
                await asyncio.wait_for(self.stopping.wait(), TICK_S)
            except asyncio.TimeoutError:
                pass

    def _teardown(self) -> None:
        if self.state.phase != "failed":
            self.state.phase = "stopping"
        self._save()
        replica_groups = [r.pgid for r in self.state.replicas]
        end_groups(replica_groups, TEARDOWN_GRACE_S)
        end_groups([s.pgid for s in self.state.services], TEARDOWN_GRACE_S)
        for proc in self.procs.values():
            proc.poll()
        if self.state.phase != "failed":
            self.state.phase = "stopped"
        sock = self.state.haproxy_socket
        if sock:
            Path(sock).unlink(missing_ok=True)
        self._save()
        log(f"{self.state.phase}")

    # ------------------------------------------------------------------ replicas
    def _replica_argv(self, name: str, port: int, device: int) -> list[str]:
        fields = {
            "port": port, "name": name, "model": self.spec.model, "model_store": self.state.via_proxy["model_store"],
            "feature_store": self.state.via_proxy["feature_store"], "device": device, "vgpu_dir": self.vgpu_dir,
        }
        if self.spec.replica_cmd:
            return shlex.split(self.spec.replica_cmd.format(**fields))
        return [
            sys.executable, "-m", "inferchaos.targets.local.server", "--port", str(port), "--name", name,
            "--model", self.spec.model, "--model-store", str(fields["model_store"]),
            "--feature-store", str(fields["feature_store"]), "--vgpu-dir", str(self.vgpu_dir),
            "--device", str(device), "--oom", self.spec.oom, *(["--cudart", self.cudart] if self.cudart else []),
            *self.spec.server_args,
        ]

    def _spawn_replica(self, slot: int | None) -> ReplicaRecord:
        self.counter += 1
        name = f"replica-{self.counter}"
        port = free_port()
        used = {r.device for r in self.state.replicas}
        device = next(i for i in range(len(used) + 1) if i not in used)
        dev = VirtualDevice(self.vgpu_dir, device)
        if not dev.exists():
            VirtualDevice.create(self.vgpu_dir, device, self.spec.device_capacity_bytes)
        log_path = self.logs / f"{name}.log"
        env = replica_env(PYTHONUNBUFFERED="1", INFERCHAOS_REPLICA=name,
                          **cuda_fault_env(read_desired(self.dir).get("cuda_faults", {}), device, os.environ))
        try:
            proc = spawn(self._replica_argv(name, port, device), log_path, env)
        except OSError as exc:
            raise ClusterStartError(f"cannot start replica command: {exc.strerror}: {exc.filename}") from None
        self.procs[name] = proc
        rec = ReplicaRecord(
            name=name, slot=slot, port=port, pid=proc.pid, pgid=proc.pid, device=device,
            phase="starting", started_at=time.time(), log=str(log_path),
        )
        self._started_mono[name] = time.monotonic()
        self.state.replicas.append(rec)
        if slot is not None and self.admin:
            self.admin.point_slot(slot, port)
        log(f"started {name} (pid {proc.pid}, port {port}, device {device}, "
            f"{'slot r%d' % slot if slot else 'warm pool'})")
        return rec

    def _setting(self, key: str) -> float:
        return read_desired(self.dir).get(key, getattr(self.spec, key))

    def _reap(self) -> bool:
        """Record replicas whose process ended. Their LB slot is left as it was: HAProxy
        must find out by itself, as it would for a node that vanished."""
        changed = False
        for rec in list(self.state.replicas):
            code = self.procs[rec.name].poll()
            if code is None:
                continue
            changed = True
            rec.phase, rec.exit_code, rec.died_at = "dead", code, time.time()
            self.state.replicas.remove(rec)
            self.state.history.append(rec)
            del self.procs[rec.name]
            self.retiring.discard(rec.name)
            log(f"{rec.name} exited with code {code}")
        return changed

    def _converge(self) -> bool:
        """Bring active replicas and the warm pool to their desired counts: promote a ready
        standby into an empty slot at once, else schedule a new replica after the
        provisioning delay (a node being acquired); retire what is over."""
        changed = False
        now = time.monotonic()
        delay = float(self._setting("provisioning_delay_s"))
        live = [r for r in self.state.replicas if r.name not in self.retiring]
        active = [r for r in live if r.slot is not None]
        taken = {r.slot for r in active} | {p.slot for p in self.pending if p.slot is not None}
        missing = self._desired_replicas() - len(taken)
        for _ in range(max(0, missing)):
            slot = next(i for i in range(1, self.spec.slots + 1) if i not in taken)
            taken.add(slot)
            standby = next((r for r in live if r.slot is None and r.phase == "ready"), None)
            if standby is not None:
                standby.slot, standby.promoted_at = slot, time.time()
                assert self.admin is not None
                self.admin.point_slot(slot, standby.port)
                log(f"promoted warm {standby.name} into slot r{slot}")
            else:
                self.pending.append(Pending(now, slot))
                log(f"slot r{slot} empty: a replacement starts in {delay:.1f}s")
            changed = True
        if missing < 0:  # scale in: cancel pending starts first, then retire the highest slots
            excess = -missing
            for p in sorted((p for p in self.pending if p.slot is not None), key=lambda p: -(p.slot or 0))[:excess]:
                self.pending.remove(p)
                excess -= 1
            for rec in sorted(active, key=lambda r: -(r.slot or 0))[:excess]:
                self._retire(rec)
            changed = True
        standby = [r for r in self.state.replicas if r.slot is None and r.name not in self.retiring]
        waiting = [p for p in self.pending if p.slot is None]
        want = int(self._setting("warm_pool")) - len(standby) - len(waiting)
        for _ in range(max(0, want)):
            self.pending.append(Pending(now, None))
            changed = True
        for p in waiting[: max(0, -want)]:  # scale down: cancel starts not yet made first
            self.pending.remove(p)
            want += 1
            changed = True
        for rec in sorted(standby, key=lambda r: r.phase == "ready")[: max(0, -want)]:
            self._retire(rec)
            changed = True
        return changed

    def _desired_replicas(self) -> int:
        """The autoscaler's count when it is on, else the setting; never below a pre-heat."""
        base = self.scaling.desired if self.scaling.desired is not None else int(self._setting("replicas"))
        return max(base, int(read_desired(self.dir).get("preheat", 0)))

    async def _autoscale(self) -> bool:
        """Poll the scaling metric from the serving replicas when due, and decide."""
        now = time.monotonic()
        was = self.state.autoscaler.get("enabled", False)
        if not self.scaling.due(policy_from(read_desired(self.dir)), now):
            if was and self.scaling.autoscaler is None:
                self.state.autoscaler = {"enabled": False}
                return True
            return False
        assert self.http is not None and self.scaling.autoscaler is not None
        serving = [r for r in self.state.active() if r.phase == "ready" and r.name not in self.retiring]
        texts = await asyncio.gather(*(self._metrics_text(r.port) for r in serving))
        value = metric_sum([t for t in texts if t], self.scaling.autoscaler.policy.metric)
        current = self.scaling.desired if self.scaling.desired is not None else len(self.state.active())
        if self.scaling.apply(now, value, current):
            log(f"autoscaler: {self.scaling.autoscaler.policy.metric}={value:g}: {current} -> "
                f"{self.scaling.desired} replicas")
        self.state.autoscaler = self.scaling.view(time.time() - now)
        return True

    async def _metrics_text(self, port: int) -> str | None:
        assert self.http is not None
        try:
            async with self.http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                return await resp.text() if resp.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None

    def _retire(self, rec: ReplicaRecord) -> None:
        """Scale-in: out of the LB first, then a graceful stop."""
        self.retiring.add(rec.name)
        if rec.slot is not None and self.admin is not None:
            self.admin.retire_slot(rec.slot)
        signal_group(rec.pgid, signal.SIGTERM)
        log(f"retiring {rec.name}")

    def _start_due(self) -> bool:
        now = time.monotonic()
        delay = float(self._setting("provisioning_delay_s"))
        due = [p for p in self.pending if p.since + delay <= now]
        for p in due:
            self.pending.remove(p)
            self._spawn_replica(p.slot)
        return bool(due)

    async def _poll_readiness(self) -> bool:
        assert self.http is not None
        recs = list(self.state.replicas)
        results = await asyncio.gather(*(self._ready(r.port) for r in recs))
        changed = False
        for rec, ready in zip(recs, results):
            phase = "ready" if ready else ("starting" if rec.ready_at is None else "unready")
            if phase == rec.phase:
                continue
            changed = True
            rec.phase = phase
            if ready and rec.ready_at is None:
                rec.ready_at = time.time()
                rec.cold_start_s = round(time.monotonic() - self._started_mono[rec.name], 3)
                log(f"{rec.name} ready after {rec.cold_start_s:.2f}s")
        return changed

    async def _ready(self, port: int) -> bool:
        assert self.http is not None
        try:
            async with self.http.get(f"http://127.0.0.1:{port}{self.spec.ready_path}") as resp:
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return False

    # ------------------------------------------------------------------ services
    def _start_service(self, name: str, argv: list[str], port: int | None) -> None:
        log_path = self.logs / f"{name}.log"
        proc = spawn(argv, log_path, service_env(PYTHONUNBUFFERED="1"))
        self.procs[name] = proc
        self.state.services.append(ServiceRecord(name, proc.pid, proc.pid, port, str(log_path)))
        self._save()

    def _fail_if_exited(self, name: str) -> None:
        code = self.procs[name].poll()
        if code is not None:
            rec = self.state.service(name)
            raise ClusterStartError(f"{name} exited at once with code {code}: {log_tail(rec.log)}")

    async def _wait_healthy(self, name: str, url: str) -> None:
        assert self.http is not None
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        while time.monotonic() < deadline:
            self._fail_if_exited(name)
            try:
                async with self.http.get(url) as resp:
                    if resp.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.05)
        raise ClusterStartError(f"{name} did not turn healthy within {SERVICE_START_TIMEOUT_S:.0f}s")

    def _save(self) -> None:
        self.state.updated_at = time.time()
        if self.pending:
            delay = float(self._setting("provisioning_delay_s"))
            offset = self.state.updated_at - time.monotonic()
            self.state.pending = [{"slot": p.slot, "due_wall": round(p.since + delay + offset, 3)}
                                  for p in self.pending]
        else:
            self.state.pending = []
        write_state(self.state)
        if self.spec.prometheus:
            self._scrape_targets()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m inferchaos.targets.local.supervisor")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--owner-pid", type=int, default=None)
    args = parser.parse_args(argv)
    spec = ClusterSpec.from_dict(json.loads((args.state_dir / "spec.json").read_text()))
    sys.exit(asyncio.run(Supervisor(spec, args.state_dir, args.owner_pid).main()))


if __name__ == "__main__":
    main()
