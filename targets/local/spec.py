"""What a local cluster should look like: the desired state the supervisor keeps."""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass, field

from inferchaos.ground.errors import UsageError
from inferchaos.targets.local import haproxy

GIB = 1024**3

#: Placeholders a `replica_cmd` may use; each is filled in per replica.
REPLICA_CMD_FIELDS = ("port", "name", "model", "model_store", "feature_store", "device", "vgpu_dir")


@dataclass(frozen=True)
class ClusterSpec:
    replicas: int = 3
    warm_pool: int = 0
    provisioning_delay_s: float = 2.0
    #: Any server command in place of ours, e.g. "mlserver start . --http-port {port}".
    replica_cmd: str | None = None
    ready_path: str = "/v2/health/ready"
    lb_port: int = 0
    model: str = "mlp"
    oom: str = "exit"
    device_capacity_bytes: int = 16 * GIB
    feature_interval_s: float = 1.0
    startup_timeout_s: float = 60.0
    #: LB slots pre-declared in HAProxy; replicas are placed in them at runtime.
    slots: int = 16
    #: Extra options for the reference server (`python -m inferchaos.targets.local.server --help`).
    server_args: tuple[str, ...] = field(default_factory=tuple)
    #: Run a Prometheus (the `prometheus` binary) scraping every replica and HAProxy.
    prometheus: bool = False

    def validate(self) -> ClusterSpec:
        # what goes into haproxy.cfg: checked first, before anything starts (haproxy.render_config
        # checks again): a newline in the ready path would add configuration lines
        if type(self.lb_port) is not int or not 0 <= self.lb_port <= 65535:
            raise UsageError(f"port must be 0..65535, got {self.lb_port!r}")
        haproxy.check_ready_path(self.ready_path)
        haproxy.check_slots(self.slots)
        if self.replicas < 1:
            raise UsageError(f"replicas must be at least 1, got {self.replicas}")
        if self.warm_pool < 0:
            raise UsageError(f"warm pool must be 0 or more, got {self.warm_pool}")
        if self.replicas > self.slots:
            raise UsageError(f"at most {self.slots} replicas, got {self.replicas}")
        if self.provisioning_delay_s < 0:
            raise UsageError(f"provisioning delay must be 0 or more seconds, got {self.provisioning_delay_s}")
        if self.oom not in ("exit", "reject"):
            raise UsageError(f"oom must be 'exit' or 'reject', got {self.oom!r}")
        if self.startup_timeout_s <= 0:
            raise UsageError(f"startup timeout must be positive, got {self.startup_timeout_s}")
        if self.replica_cmd is not None:
            try:
                argv = shlex.split(self.replica_cmd)
                self.replica_cmd.format(**{k: "x" for k in REPLICA_CMD_FIELDS})
            except (ValueError, KeyError, IndexError) as exc:
                raise UsageError(
                    f"bad --replica-cmd {self.replica_cmd!r}: {exc}; placeholders are "
                    + ", ".join("{" + f + "}" for f in REPLICA_CMD_FIELDS)
                ) from None
            if not argv:
                raise UsageError("--replica-cmd is empty")
            if "{port}" not in self.replica_cmd:
                raise UsageError("--replica-cmd must contain {port}: each replica listens on its own port")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["server_args"] = list(self.server_args)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ClusterSpec:
        d = dict(d)
        d["server_args"] = tuple(d.get("server_args", ()))
        return cls(**d)
