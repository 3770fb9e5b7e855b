"""The DCGM probe against a real Prometheus scraping a fake dcgm-exporter (its text format,
its label names and units, values changed while the test runs), and the choice between it
and the NVML probe by where the GPUs are.

The figures expected are worked out from the values served, never from the probe's PromQL."""

from __future__ import annotations

import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from inferchaos.probes.catalogue import standard_probes
from inferchaos.probes.dcgm import DcgmProbe, PodScope, gauge_queries, xid_changes
from inferchaos.probes.gpu import GPU_KEYS, GpuObserver
from inferchaos.probes.probe import RunView, measurements
from inferchaos.probes.prometheus import PrometheusClient, Series
from inferchaos.probes.slo import Objective
from inferchaos.probes.verdict import judge, verdict
from inferchaos.targets import capabilities as caps
from tests.support.waiting import wait_for
from inferchaos.ground.ports import free_port
from inferchaos.targets.local.prometheus import LocalPrometheus

MIB = 1024 * 1024
FIELDS = {  # dcgm-exporter's default-counters.csv: field, help
    "DCGM_FI_DEV_GPU_TEMP": "GPU temperature (in C).",
    "DCGM_FI_DEV_POWER_USAGE": "Power draw (in W).",
    "DCGM_FI_DEV_GPU_UTIL": "GPU utilization (in %).",
    "DCGM_FI_DEV_XID_ERRORS": "Value of the last XID error encountered.",
    "DCGM_FI_DEV_FB_FREE": "Framebuffer memory free (in MiB).",
    "DCGM_FI_DEV_FB_USED": "Framebuffer memory used (in MiB).",
}
H100 = dict(modelName="NVIDIA H100 80GB HBM3", DCGM_FI_DRIVER_VERSION="550.54.15")
TOTAL_MIB = 81559  # used + free on an H100 80GB


def gpu(n: int, host: str, who: dict[str, str], used: float, util: float, power: float, temp: float,
        xid: float = 0) -> dict:
    labels = dict(gpu=str(n % 8), UUID=f"GPU-{n:08x}-5b2c-4c1e-9f0e-{n:012x}", device=f"nvidia{n % 8}",
                  Hostname=host, **H100, **who)
    return dict(labels=labels, values={"DCGM_FI_DEV_FB_USED": used, "DCGM_FI_DEV_FB_FREE": TOTAL_MIB - used,
                                       "DCGM_FI_DEV_GPU_UTIL": util, "DCGM_FI_DEV_POWER_USAGE": power,
                                       "DCGM_FI_DEV_GPU_TEMP": temp, "DCGM_FI_DEV_XID_ERRORS": xid})


def healthy_gpus() -> dict[str, dict]:
    return {
        # vllm-0's GPU raised XID 43 long before the run: its last-XID gauge still says 43
        "vllm-0": gpu(0, "gpu-node-a", dict(namespace="serving", pod="vllm-0", container="vllm"),
                      used=30000, util=40, power=312.5, temp=61, xid=43),
        # scraped without honor_labels: the exporter's own pod owns `pod`, the workload is exported_*
        "vllm-1": gpu(1, "gpu-node-b", dict(namespace="gpu-operator", pod="nvidia-dcgm-exporter-7kq2x",
                                            container="nvidia-dcgm-exporter", exported_namespace="serving",
                                            exported_pod="vllm-1", exported_container="vllm"),
                      used=20000, util=70, power=400.0, temp=66),
        # not ours: same pod name in another namespace, a look-alike name, an unescaped-regex trap
        "other": gpu(2, "gpu-node-a", dict(namespace="team-b", pod="vllm-0", container="vllm"),
                     used=81000, util=100, power=700, temp=90, xid=79),
        "lookalike": gpu(3, "gpu-node-c", dict(namespace="serving", pod="vllm-00", container="vllm"),
                         used=80000, util=99, power=690, temp=88, xid=31),
        "webx0": gpu(4, "gpu-node-c", dict(namespace="serving", pod="webx0", container="web"),
                     used=1000, util=5, power=80, temp=40),
    }


class FakeDcgmExporter:
    """Serves /metrics as dcgm-exporter does (text format 0.0.4, one gauge per field per GPU)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gpus = healthy_gpus()
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = exporter.render().encode()
                self.send_response(200 if self.path == "/metrics" else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def render(self) -> str:
        lines = []
        with self.lock:
            for field, help_text in FIELDS.items():
                lines += [f"# HELP {field} {help_text}", f"# TYPE {field} gauge"]
                for g in self.gpus.values():
                    labels = ",".join(f'{k}="{v}"' for k, v in g["labels"].items())
                    lines.append(f"{field}{{{labels}}} {g['values'][field]:g}")
        return "\n".join(lines) + "\n"

    def set(self, name: str, **values: float) -> None:
        short = {"used": "DCGM_FI_DEV_FB_USED", "util": "DCGM_FI_DEV_GPU_UTIL", "xid": "DCGM_FI_DEV_XID_ERRORS"}
        with self.lock:
            for k, v in values.items():
                self.gpus[name]["values"][short[k]] = v
                if k == "used":
                    self.gpus[name]["values"]["DCGM_FI_DEV_FB_FREE"] = TOTAL_MIB - v

    def relabel(self, name: str, **labels: str) -> None:
        with self.lock:
            self.gpus[name]["labels"].update(labels)

    def reset(self) -> None:
        """Back to healthy, then two scrapes' wait: a series relabelled back is absent from
        Prometheus until it is scraped again, and the next test must not see that gap."""
        with self.lock:
            self.gpus = healthy_gpus()
        time.sleep(2.5)


@pytest.fixture(scope="module")
def dcgm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeDcgmExporter, str]]:
    if shutil.which("prometheus") is None:
        pytest.skip("the `prometheus` binary is not installed (Debian/Ubuntu: apt-get install -y prometheus)")
    exporter = FakeDcgmExporter()
    exporter.thread.start()
    try:
        with LocalPrometheus([exporter.address], tmp_path_factory.mktemp("prometheus"), interval_s=1.0) as prom, \
                PrometheusClient(prom.url) as client:
            wait_for(lambda: len(client.query("DCGM_FI_DEV_FB_USED").samples) == len(exporter.gpus), 30,
                     "Prometheus to scrape the fake dcgm-exporter")
            time.sleep(3.0)  # some history before any window: the XID gauge's earlier value
            yield exporter, prom.url
    finally:
        exporter.server.shutdown()
        exporter.server.server_close()


class Window:
    """A run's inject -> end, on the monotonic clock a RunView uses."""

    def __init__(self) -> None:
        self.t0, self.wall0 = time.monotonic(), time.time()
        self.start = time.monotonic()

    def close(self) -> RunView:
        end = time.monotonic()
        return RunView([], {"inject": (self.start, self.start), "recovery": (end, end)}, self.t0, self.wall0)


def probe(url: str | None, pods: tuple[str, ...] = ("vllm-0", "vllm-1"), namespace: str | None = "serving",
          **kw: object) -> DcgmProbe:
    return DcgmProbe(url=url, pods=lambda: pods, namespace=namespace, **kw)


def observe(p: DcgmProbe, run: RunView) -> tuple[dict[str, float | None], dict[str, str]]:
    ms = p.observe(run)
    return {m.key: m.value for m in ms}, {m.key: m.reason for m in ms if m.reason}


OBJECTIVES = [Objective("gpu_memory_peak_frac", "<=", 0.9, "ratio"), Objective("gpu_xid_errors", "<=", 0, "errors"),
              Objective("gpu_temperature_peak_c", "<=", 85, "C"), Objective("gpu_power_peak_w", "<=", 650, "W"),
              Objective("gpu_utilization_mean_pct", "<=", 95, "%"),
              Objective("gpu_memory_peak_bytes", "<=", 76 * 1024**3, "bytes")]


# ---------------------------------------------------------------------- real Prometheus
@pytest.mark.cluster
def test_healthy_gpus_of_the_serving_pods_pass_and_an_old_xid_is_not_a_new_one(dcgm):
    exporter, url = dcgm
    window = Window()
    time.sleep(3.0)
    values, reasons = observe(probe(url), window.close())
    assert reasons == {}
    # vllm-0: 30000 MiB of 81559; vllm-1: 20000 MiB (the other namespace's full GPU is not ours)
    assert values["gpu_memory_peak_frac"] == pytest.approx(30000 / TOTAL_MIB)
    assert values["gpu_memory_peak_bytes"] == 30000 * MIB
    assert values["gpu_utilization_mean_pct"] == pytest.approx((40 + 70) / 2)
    assert values["gpu_power_peak_w"] == 400.0 and values["gpu_temperature_peak_c"] == 66.0
    assert values["gpu_xid_errors"] == 0  # vllm-0's gauge said 43 before and through the window
    results = judge(OBJECTIVES, values, reasons)
    assert verdict(results) == "pass", [r.line() for r in results]


@pytest.mark.cluster
def test_memory_near_full_and_an_xid_in_the_window_fail_by_name(dcgm):
    exporter, url = dcgm
    try:
        window = Window()
        time.sleep(1.5)
        exporter.set("vllm-0", used=80500)  # 98.7% of the GPU
        time.sleep(2.5)
        exporter.set("vllm-1", xid=79)  # GPU has fallen off the bus, in the run's last instant:
        values, reasons = observe(probe(url), window.close())  # seen once Prometheus has it
    finally:
        exporter.reset()
    assert values["gpu_memory_peak_frac"] == pytest.approx(80500 / TOTAL_MIB)
    assert values["gpu_memory_peak_bytes"] == 80500 * MIB
    assert values["gpu_xid_errors"] == 1
    results = judge(OBJECTIVES, values, reasons)
    assert verdict(results) == "fail"
    assert sorted(r.name for r in results if not r.ok) == ["gpu_memory_peak_bytes", "gpu_memory_peak_frac",
                                                           "gpu_xid_errors"]
    line = next(r.line() for r in results if r.name == "gpu_xid_errors")
    assert line == "FAIL gpu_xid_errors <= 0 errors: observed 1 errors", line


@pytest.mark.cluster
def test_a_pod_replaced_onto_a_gpu_with_an_old_xid_raises_none(dcgm):
    """The XID gauge follows the GPU (its UUID), not the pod now holding it."""
    exporter, url = dcgm
    try:
        window = Window()
        time.sleep(1.5)
        exporter.relabel("vllm-0", pod="vllm-0-r2")  # the replacement lands on the same GPU, gauge still 43
        time.sleep(2.5)
        values, reasons = observe(probe(url, pods=("vllm-0", "vllm-0-r2", "vllm-1")), window.close())
    finally:
        exporter.reset()
    assert values["gpu_xid_errors"] == 0, reasons


@pytest.mark.cluster
def test_the_scope_takes_exactly_the_serving_pods_gpus(dcgm):
    """Each query, asked as it is built, returns the GPUs of the pods named and no other:
    not the same name in another namespace, not a longer name, not a regex look-alike."""
    exporter, url = dcgm
    uuid = {name: g["labels"]["UUID"] for name, g in exporter.gpus.items()}
    with PrometheusClient(url) as client:
        def gpus(scope: PodScope) -> list[set[str]]:
            return [{s.labels.get("UUID") for s in client.query(q.promql).samples} for q in gauge_queries(scope)]

        assert gpus(PodScope(("vllm-0", "vllm-1"), "serving")) == [{uuid["vllm-0"], uuid["vllm-1"]}] * 5
        assert gpus(PodScope(("vllm-0",), None)) == [{uuid["vllm-0"], uuid["other"]}] * 5
        assert gpus(PodScope(("web.0",), "serving")) == [set()] * 5


@pytest.mark.cluster
def test_pods_without_dcgm_series_are_not_measured(dcgm):
    exporter, url = dcgm
    window = Window()
    values, reasons = observe(probe(url, pods=("web.0",)), window.close())
    assert values == {k: None for k in GPU_KEYS}
    assert all("dcgm-exporter" in reasons[k] and "web.0" in reasons[k] for k in GPU_KEYS), reasons


@pytest.mark.cluster
def test_a_prometheus_with_no_exporter_fails_every_gpu_objective_as_not_measured(tmp_path):
    if shutil.which("prometheus") is None:
        pytest.skip("the `prometheus` binary is not installed (Debian/Ubuntu: apt-get install -y prometheus)")
    with LocalPrometheus([f"127.0.0.1:{free_port()}"], tmp_path, interval_s=1.0) as prom:
        window = Window()
        time.sleep(1.0)
        values, reasons = observe(probe(prom.url), window.close())
    assert values == {k: None for k in GPU_KEYS}
    results = judge(OBJECTIVES, values, reasons)
    assert verdict(results) == "fail" and not any(r.ok for r in results)
    for r in results:
        assert r.detail.startswith("not measured: no DCGM_FI_DEV_"), r.detail
        assert "dcgm-exporter" in r.detail and prom.url in r.detail


# ---------------------------------------------------------------------- no Prometheus
def test_without_a_prometheus_url_it_says_the_runner_has_no_gpu_and_what_to_give():
    window = Window()
    values, reasons = observe(probe(None), window.close())
    assert values == {k: None for k in GPU_KEYS}
    (result,) = judge([Objective("gpu_memory_peak_frac", "<=", 0.9, "ratio")], values, reasons)
    assert not result.ok and result.detail.startswith("not measured: no Prometheus to ask")
    assert "runner pod has no GPU" in result.detail and "--prometheus URL" in result.detail


def test_an_unreachable_prometheus_is_not_measured_not_a_crash():
    window = Window()
    values, reasons = observe(probe(f"http://127.0.0.1:{free_port()}", retry_for_s=0.3), window.close())
    assert values == {k: None for k in GPU_KEYS}
    assert all("unreachable" in reasons[k] for k in GPU_KEYS), reasons


def test_xid_count_is_changes_to_a_nonzero_code_in_the_window():
    def series(*points: tuple[float, float]) -> Series:
        return Series({"UUID": "GPU-x"}, tuple(points))

    # 43 before the window, still 43: none; 43 -> 79 -> 79 -> 0 -> 31 in the window: two
    assert xid_changes([series((90, 43), (100, 43), (101, 43))], 100) == 0
    assert xid_changes([series((99, 43), (100, 79), (101, 79), (102, 0), (103, 31))], 100) == 2
    # an XID raised just before the window is not the window's
    assert xid_changes([series((98, 0), (99, 79), (100, 79))], 100) == 0
    # a GPU first seen in the window with a code: when it came is unknown, so it counts
    assert xid_changes([series((100, 13))], 100) == 1
    assert xid_changes([series((100, 0)), series((99, 0), (101, 94))], 100) == 1


# ---------------------------------------------------------------------- which probe runs where
class StubTarget:
    def __init__(self, has: frozenset[str], namespace: str | None = None) -> None:
        self.has, self.namespace = has, namespace

    def capabilities(self) -> frozenset[str]:
        return self.has

    def metrics_urls(self) -> dict:
        return {}

    def replica_records(self) -> list:
        return [type("Pod", (), {"name": "vllm-0"})(), type("Pod", (), {"name": "vllm-1"})()]

    def replicas(self) -> list:
        return []

    def lb_source(self) -> object:
        return object()


def test_nvml_runs_where_the_runner_has_the_gpus_and_dcgm_where_it_does_not():
    local = standard_probes(StubTarget(frozenset({caps.GPU, caps.LB_SLOTS})), prometheus_url="http://prom:9090")
    assert any(isinstance(p, GpuObserver) for p in local) and not any(isinstance(p, DcgmProbe) for p in local)

    kube_has = frozenset({caps.LB_SLOTS, caps.AUTOSCALER})
    kube = standard_probes(StubTarget(kube_has, "serving"), prometheus_url="http://prom:9090")
    assert not any(isinstance(p, GpuObserver) for p in kube)
    (dcgm_probe,) = [p for p in kube if isinstance(p, DcgmProbe)]
    assert (dcgm_probe.url, dcgm_probe.namespace, list(dcgm_probe.pods())) == \
        ("http://prom:9090", "serving", ["vllm-0", "vllm-1"])
    assert set(dcgm_probe.keys) == set(GPU_KEYS)
    # one probe per GPU key: no key is measured twice, by the wrong one
    keys = [k for p in kube for k in p.keys]
    assert all(keys.count(k) == 1 for k in GPU_KEYS)

    # on Kubernetes without --prometheus: each gpu_* key says where the figures would come from
    window = Window()
    kube = standard_probes(StubTarget(kube_has, "serving"))
    dcgm_only = [p for p in kube if isinstance(p, DcgmProbe)]
    ms = measurements(dcgm_only, kube_has, window.close())
    assert {m.key for m in ms} == set(GPU_KEYS) and all(m.value is None and "dcgm-exporter" in m.reason for m in ms)


def test_the_readme_maps_every_dcgm_field_to_its_observation():
    readme = (Path(__file__).resolve().parents[2] / "docs" / "probes.md").read_text()
    for name in (*FIELDS.keys(), "exported_pod", *GPU_KEYS):
        assert name in readme, name
