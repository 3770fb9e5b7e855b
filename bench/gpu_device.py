"""What a real NVIDIA GPU shows of the GPU faults; run once, on a machine that has one.

    python3 bench/gpu_device.py [--out DIR] [--device 0] [--hold-mib 8192] [--leave-mib 2048] [--shim SO]

The GPU side is otherwise tested only at its lowest boundaries (NVML's functions, a
stand-in libcudart): this script is where the same code meets a driver. Three steps, each
recording what it saw rather than asserting:

1. **hog vs holder.** A torch process holds `--hold-mib` of device memory; the suite's
   memory hog (`python -m inferchaos.faults.gpu_hog --cuda`, the gpu_oom fault's program)
   takes all but `--leave-mib`; the holder then asks for 1 GiB more than that is left
   (torch's OOM expected), the hog is SIGTERMed, and the holder asks again. NVML's used/free and per-process memory
   before, with the holder, during the hog and after.
2. **shim vs torch.** A torch process with the cuda_errors shim LD_PRELOADed: an
   allocation disarmed, armed (`alloc=oom`: torch's OutOfMemoryError expected, while NVML
   says the memory is free — the signal a node monitor never sees), reverted; a kernel
   disarmed, armed (`launch=700`: illegal address), and after revert (sticky, as on a
   device). The shim's status file says what it intercepted.
3. **the NVML probe through both** (`probes.gpu.GpuProbe`, every 0.25 s): per step the
   gpu_* observations the SLOs judge (memory, utilisation, power, temperature, XIDs) and
   whether XID events could be waited on at all.

Writes gpu_device.json to --out (default: $OUT where set, else reports/out/gpu_device) and
prints the figures. Needs torch with CUDA, nvidia-ml-py and, for step 2, a C compiler or a
prebuilt shim (`--shim`, from `python -m inferchaos.ground.native` on an x86-64 machine).
Exit: 0 it ran (whatever it saw), 2 bad input, 3 no CUDA device here (nothing written).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inferchaos.ground.errors import UsageError  # noqa: E402

MIB = 2**20
PROBE_INTERVAL_S = 0.25
#: how long the hog holds before the holder asks: the probe samples the peak several times.
HOLD_S = 2.0

#: The torch process both steps drive: one command a line on stdin, one JSON answer a line.
#: Each allocation empties torch's cache first, so it reaches cudaMalloc (and the shim).
WORKER = r"""
import json, os, sys, torch
dev = torch.device("cuda", int(sys.argv[1]))
def answer(**kw):
    print(json.dumps(kw), flush=True)
try:
    torch.zeros(1, device=dev); torch.cuda.synchronize(dev)
except Exception as exc:
    answer(ok=False, cmd="start", error_type=type(exc).__module__ + "." + type(exc).__qualname__, error=str(exc)[:3000])
    sys.exit(1)
answer(ok=True, cmd="start", pid=os.getpid(), torch=torch.__version__, cuda=torch.version.cuda)
held = []
for line in sys.stdin:
    cmd, *arg = line.split() or ["?"]
    try:
        if cmd == "alloc":
            torch.cuda.empty_cache()
            held.append(torch.empty(int(arg[0]) * 2**20, dtype=torch.uint8, device=dev))
            torch.cuda.synchronize(dev)
        elif cmd == "kernel":
            x = torch.arange(1 << 20, device=dev, dtype=torch.float32)
            value = float((x * 2).sum().item())
        elif cmd == "release":
            held.clear(); torch.cuda.empty_cache()
        elif cmd == "quit":
            answer(ok=True, cmd=cmd); break
        else:
            raise ValueError("unknown command " + cmd)
        answer(ok=True, cmd=cmd, allocated=torch.cuda.memory_allocated(dev), reserved=torch.cuda.memory_reserved(dev))
    except Exception as exc:
        answer(ok=False, cmd=cmd, error_type=type(exc).__module__ + "." + type(exc).__qualname__, error=str(exc)[:3000])
"""


class NoDevice(Exception):
    """No CUDA device this script can use here: nothing is run, nothing written."""


class Stop(Exception):
    """SIGTERM/SIGINT: unwind through every `finally`, so nothing is left on the GPU."""


#: resolved here, not in the forked child: the probe's threads run while children start,
#: and a child between fork and exec must not need the loader's locks.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child, before exec: SIGTERM it when this script dies, even by SIGKILL (a device
    run that outlives its limit), so no hog keeps the GPU's memory for the next run."""
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)


class Worker:
    """A torch process on the device, asked one thing at a time, with a deadline each."""

    def __init__(self, device: int, env: dict[str, str] | None = None, start_s: float = 120.0) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER, str(device)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})}, preexec_fn=die_with_parent)
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines.put), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True).start()
        self.started = self._answer(start_s)
        self.pid = self.proc.pid

    @staticmethod
    def _pump(stream: Any, put: Any) -> None:
        for line in stream:
            put(line)

    def _answer(self, timeout_s: float) -> dict[str, Any]:
        try:
            return json.loads(self.lines.get(timeout=timeout_s))
        except queue.Empty:
            alive = self.proc.poll() is None
            return {"ok": False, "error_type": "timeout" if alive else "exited",
                    "error": (f"no answer in {timeout_s:.0f} s" if alive else f"exit {self.proc.returncode}")
                    + ("; stderr: " + "".join(self.stderr[-5:]).strip() if self.stderr else "")}

    def ask(self, command: str, timeout_s: float = 60.0) -> dict[str, Any]:
        if self.proc.poll() is not None:
            return {"ok": False, "cmd": command, "error_type": "exited", "error": f"exit {self.proc.returncode}"}
        t0 = time.monotonic()
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self._answer(timeout_s)
        answer["s"] = round(time.monotonic() - t0, 4)
        return answer

    def close(self) -> int | None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.flush()
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def first_line(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer as recorded: the error's first line beside its whole text."""
    if answer.get("error"):
        answer = {**answer, "error_first_line": answer["error"].strip().splitlines()[0]}
    return answer


# ---------------------------------------------------------------------- NVML readings
def nvml_memory(pynvml: Any, handle: Any) -> dict[str, Any]:
    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
    try:
        procs = [{"pid": int(p.pid), "used_mib": None if p.usedGpuMemory is None else round(p.usedGpuMemory / MIB)}
                 for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
    except pynvml.NVMLError as exc:
        procs = [{"error": str(exc)}]
    return {"at": time.time(), "used_mib": round(mem.used / MIB), "free_mib": round(mem.free / MIB),
            "total_mib": round(mem.total / MIB), "processes": procs}


def open_device(device: int) -> tuple[Any, Any, dict[str, Any]]:
    """NVML and torch both see `device`, else `NoDevice` with their own reason (exit 3)."""
    try:
        import pynvml  # noqa: PLC0415 - optional (nvidia-ml-py)
    except ImportError:
        raise NoDevice("nvidia-ml-py (pynvml) is not installed") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        from inferchaos.probes.gpu import nvml_reason  # noqa: PLC0415

        raise NoDevice(nvml_reason(exc)) from None
    count = pynvml.nvmlDeviceGetCount()
    if not 0 <= device < count:
        raise NoDevice(f"NVML sees {count} device(s), not device {device}")
    try:
        import torch  # noqa: PLC0415 - the device machine's own
    except ImportError:
        raise NoDevice("torch is not installed (steps 1 and 2 drive a torch process)") from None
    if not torch.cuda.is_available():
        raise NoDevice(f"torch {torch.__version__} sees no CUDA device")
    if not device < torch.cuda.device_count():
        raise NoDevice(f"torch sees {torch.cuda.device_count()} device(s), not device {device}")
    # torch counts devices in CUDA's order (after CUDA_VISIBLE_DEVICES), NVML in PCI order:
    # the same GPU is found by its UUID, else (an old torch) by index
    try:
        handle, found_by = pynvml.nvmlDeviceGetHandleByUUID(
            "GPU-" + str(torch.cuda.get_device_properties(device).uuid)), "uuid"
    except (AttributeError, pynvml.NVMLError):
        handle, found_by = pynvml.nvmlDeviceGetHandleByIndex(device), "index"

    def text(v: Any) -> str:
        return v.decode() if isinstance(v, bytes) else str(v)

    meta = {"gpu": text(pynvml.nvmlDeviceGetName(handle)), "uuid": text(pynvml.nvmlDeviceGetUUID(handle)),
            "driver": text(pynvml.nvmlSystemGetDriverVersion()), "torch": torch.__version__,
            "torch_cuda": torch.version.cuda, "python": platform.python_version(), "host": platform.node(),
            "kernel": platform.release(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "nvml_index": int(pynvml.nvmlDeviceGetIndex(handle)), "nvml_found_by": found_by}
    return pynvml, handle, meta


# ---------------------------------------------------------------------- step 1
def hog_vs_holder(pynvml: Any, handle: Any, device: int, hold_mib: int, leave_mib: int,
                  work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"hold_mib": hold_mib, "leave_mib": leave_mib, "nvml": {}}
    out["nvml"]["before"] = nvml_memory(pynvml, handle)
    holder = Worker(device)
    hog: subprocess.Popen | None = None
    try:
        out["holder_start"] = holder.started
        out["holder_alloc"] = first_line(holder.ask(f"alloc {hold_mib}"))
        out["nvml"]["with_holder"] = nvml_memory(pynvml, handle)
        status = work / "hog.json"
        log = (work / "hog.log").open("w")
        t0 = time.monotonic()
        hog = subprocess.Popen([sys.executable, "-m", "inferchaos.faults.gpu_hog", "--device", str(device),
                                "--leave", f"{leave_mib}MiB", "--cuda", "--status", str(status)],
                               stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
                                   "PYTHONPATH", "")]).rstrip(os.pathsep)})
        held = None
        deadline = t0 + 180
        while time.monotonic() < deadline and hog.poll() is None:
            try:
                held = json.loads(status.read_text())
            except (OSError, ValueError):
                held = None
            if held and held["held"] > 0 and held["free"] <= (leave_mib + 1024) * MIB:
                break
            time.sleep(0.1)
        out["hog_reached_s"] = round(time.monotonic() - t0, 3)
        time.sleep(HOLD_S)
        out["hog_status"] = held
        out["nvml"]["during_hog"] = nvml_memory(pynvml, handle)
        out["holder_alloc_while_hogged"] = first_line(holder.ask(f"alloc {leave_mib + 1024}"))
        out["nvml"]["at_holder_oom"] = nvml_memory(pynvml, handle)
        t1 = time.monotonic()
        hog.send_signal(signal.SIGTERM)
        try:
            out["hog_exit"] = hog.wait(60)
        except subprocess.TimeoutExpired:
            hog.kill()
            out["hog_exit"] = f"killed: no exit in 60 s after SIGTERM (rc {hog.wait(10)})"
        out["hog_release_s"] = round(time.monotonic() - t1, 3)
        log.close()
        out["hog_log"] = (work / "hog.log").read_text().splitlines()[-8:]
        out["nvml"]["after_hog"] = nvml_memory(pynvml, handle)
        out["holder_alloc_after_hog"] = first_line(holder.ask(f"alloc {leave_mib + 1024}"))
    finally:
        if hog is not None and hog.poll() is None:
            hog.kill()
            hog.wait(10)
        out["holder_exit"] = holder.close()
    out["nvml"]["after"] = nvml_memory(pynvml, handle)
    return out


# ---------------------------------------------------------------------- step 2
def shim_vs_torch(pynvml: Any, handle: Any, device: int, shim: Path | None, work: Path) -> dict[str, Any]:
    from inferchaos.faults.local.cuda_errors import statuses, write_trigger  # noqa: PLC0415

    out: dict[str, Any] = {}
    if shim is None:
        from inferchaos.ground import native  # noqa: PLC0415

        try:
            shim = native.path("cuda_shim")
        except UsageError as exc:
            return {"skipped": f"no shim: {exc} (give --shim, built with `python -m inferchaos.ground.native`)"}
    out["shim"] = str(shim)
    trigger = work / "device.trigger"
    worker = Worker(device, {"LD_PRELOAD": str(shim), "INFERCHAOS_CUDA_TRIGGER": str(trigger),
                             "INFERCHAOS_CUDA_RECHECK_MS": "0"})
    try:
        out["start"] = worker.started
        # the shim writes its status as it loads: none means LD_PRELOAD refused it (ld.so only warns)
        out["shim_loaded"] = worker.pid in statuses(trigger)
        if not out["shim_loaded"]:
            out["skipped"] = ("the shim did not load into the torch process (wrong architecture or glibc?): "
                              + "".join(worker.stderr[-3:]).strip())
            return out
        out["alloc_disarmed"] = first_line(worker.ask("alloc 256"))
        write_trigger(trigger, "id=device-oom alloc=oom\n")
        out["alloc_armed"] = first_line(worker.ask("alloc 512"))
        out["nvml_at_armed_oom"] = nvml_memory(pynvml, handle)
        out["status_after_oom"] = statuses(trigger).get(worker.pid)
        trigger.unlink()
        out["alloc_reverted"] = first_line(worker.ask("alloc 512"))
        out["kernel_disarmed"] = first_line(worker.ask("kernel"))
        write_trigger(trigger, "id=device-launch launch=700\n")
        out["kernel_armed"] = first_line(worker.ask("kernel"))
        trigger.unlink()
        out["kernel_after_revert"] = first_line(worker.ask("kernel"))
    finally:
        trigger.unlink(missing_ok=True)
        out["exit"] = worker.close()
        out["stderr_tail"] = "".join(worker.stderr[-10:]).strip().splitlines()[-10:]
    # written at exit: the status read mid-step lags (the shim rewrites it at most every 100 ms)
    out["status_at_exit"] = statuses(trigger).get(worker.pid)
    return out


# ---------------------------------------------------------------------- step 3
def probe_figures(run: Any, start: float, end: float) -> dict[str, Any]:
    from inferchaos.probes.gpu import observed_from_gpu, reasons_from_gpu  # noqa: PLC0415

    return {"observed": observed_from_gpu(run, start, end), "reasons": reasons_from_gpu(run, start, end),
            "samples": sum(1 for s in run.samples if start <= s.t < end)}


def default_out() -> Path:
    return Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "reports" / "out" / "gpu_device"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = _Parser(prog="python3 bench/gpu_device.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="folder for gpu_device.json (default $OUT)")
    p.add_argument("--device", type=int, default=0, help="GPU index (default 0)")
    p.add_argument("--hold-mib", type=int, default=8192, help="what the holder process holds (default 8192)")
    p.add_argument("--leave-mib", type=int, default=2048, help="what the hog leaves free (default 2048)")
    p.add_argument("--shim", type=Path, default=None, help="a prebuilt cuda_errors shim (else compiled here)")
    args = p.parse_args(argv)
    if args.device < 0:
        raise UsageError(f"--device must be 0 or more, got {args.device}")
    if args.hold_mib <= 0:
        raise UsageError(f"--hold-mib must be more than 0, got {args.hold_mib}")
    if args.leave_mib < 0:
        raise UsageError(f"--leave-mib must be 0 or more, got {args.leave_mib}")
    if args.shim is not None and not args.shim.is_file():
        raise UsageError(f"--shim {args.shim}: no such file")
    return args


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
    except UsageError as exc:
        print(f"gpu_device: error: {exc}", file=sys.stderr)
        return 2
    try:
        pynvml, handle, meta = open_device(args.device)
    except NoDevice as exc:
        print(f"gpu_device: no CUDA device: {exc}", file=sys.stderr)
        return 3

    def stop(*_: object) -> None:
        raise Stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    from inferchaos.probes.gpu import GpuProbe  # noqa: PLC0415

    result: dict[str, Any] = {"meta": meta}
    probe = GpuProbe(interval_s=PROBE_INTERVAL_S, devices=[meta["nvml_index"]]).start()
    windows: dict[str, tuple[float, float]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="inferchaos-gpu-device-") as tmp:
            for name, step in (("hog_vs_holder", lambda: hog_vs_holder(pynvml, handle, args.device, args.hold_mib,
                                                                       args.leave_mib, Path(tmp))),
                               ("shim_vs_torch", lambda: shim_vs_torch(pynvml, handle, args.device, args.shim,
                                                                       Path(tmp)))):
                print(f"gpu_device: {name} ...", flush=True)
                t0 = time.monotonic()
                try:
                    result[name] = step()
                except Stop:
                    raise
                except Exception as exc:  # noqa: BLE001 - a broken step is a figure too; go on
                    result[name] = {"broke": f"{type(exc).__name__}: {exc}"}
                windows[name] = (t0, time.monotonic())
                result[name]["wall_s"] = round(windows[name][1] - t0, 3)
    except Stop:
        result["stopped"] = "SIGTERM/SIGINT before the end"
    finally:
        run = probe.stop()
        pynvml.nvmlShutdown()
    result["nvml_probe"] = {
        "measured": run.measured, "reason": run.reason, "devices": [asdict(d) for d in run.devices],
        "samples": len(run.samples), "xid_events": [asdict(e) for e in run.xid_events],
        "xid_watch": run.xid_unwatched or "watched (nvmlEventSetWait) for the whole run",
        "errors": list(run.errors), **{name: probe_figures(run, *w) for name, w in windows.items()}}
    out = args.out or default_out()
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_device.json").write_text(json.dumps(result, indent=2, default=str))
    print(summary(result))
    print(f"gpu_device: figures in {out / 'gpu_device.json'}")
    return 0


def summary(r: dict[str, Any]) -> str:
    """The figures a reader wants first, one a line."""
    lines = [f"{r['meta']['gpu']} driver {r['meta']['driver']}, torch {r['meta']['torch']} (CUDA {r['meta']['torch_cuda']})"]
    h = r.get("hog_vs_holder", {})
    if "nvml" in h:
        n = h["nvml"]
        for k in ("before", "with_holder", "during_hog", "after_hog", "after"):
            if k in n:
                lines.append(f"  NVML {k:>11}: used {n[k]['used_mib']} MiB, free {n[k]['free_mib']} MiB")
        lines.append(f"  hog reached its target in {h.get('hog_reached_s')} s, released in {h.get('hog_release_s')} s "
                     f"(exit {h.get('hog_exit')})")
        for k in ("holder_alloc_while_hogged", "holder_alloc_after_hog"):
            a = h.get(k, {})
            lines.append(f"  {k}: {'ok' if a.get('ok') else a.get('error_type')} {a.get('error_first_line', '')}")
    s = r.get("shim_vs_torch", {})
    for k in ("alloc_disarmed", "alloc_armed", "alloc_reverted", "kernel_disarmed", "kernel_armed",
              "kernel_after_revert"):
        if k in s:
            a = s[k]
            lines.append(f"  shim {k}: {'ok' if a.get('ok') else a.get('error_type')} {a.get('error_first_line', '')}")
    for k in ("skipped", "broke"):
        for step in ("hog_vs_holder", "shim_vs_torch"):
            if k in r.get(step, {}):
                lines.append(f"  {step} {k}: {r[step][k]}")
    p = r.get("nvml_probe", {})
    for step in ("hog_vs_holder", "shim_vs_torch"):
        if step in p:
            lines.append(f"  probe {step}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                         for k, v in p[step]["observed"].items()))
    lines.append(f"  XID: {p.get('xid_watch')}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
