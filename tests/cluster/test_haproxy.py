"""HAProxy's configuration is accepted by the real binary, and a slot follows the runtime API."""

import shutil

import pytest

from inferchaos.targets.local import haproxy
from inferchaos.ground.ports import free_port, free_ports
from inferchaos.targets.local.processes import end_groups, spawn
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="HAProxy not installed")


def test_rendered_config_passes_haproxy_check(tmp_path):
    cfg = tmp_path / "h.cfg"
    lb, stats, plain = free_ports(3)
    cfg.write_text(haproxy.render_config(lb, stats, tmp_path / "s.sock", 16, "/v2/health/ready", plain))
    haproxy.check_config(haproxy.find_haproxy(), cfg)
    text = cfg.read_text()
    tuned, plain_backend = text.split(f"\nbackend {haproxy.PLAIN_BACKEND}\n")
    for line in ("retry-on conn-failure empty-response response-timeout 502 503 504", "option redispatch 1",
                 "observe layer7 error-limit 5 on-error mark-down", "http-check send meth GET uri /v2/health/ready",
                 "balance leastconn", "inter 1s fall 2"):
        assert line in tuned, line
    # the plain backend is HAProxy's defaults: none of the tuning
    assert "balance roundrobin" in plain_backend and "http-check send meth GET uri /v2/health/ready" in plain_backend
    for tuning in ("retry-on", "redispatch", "observe", "inter ", "timeout server", "leastconn"):
        assert tuning not in plain_backend, tuning


def test_broken_config_is_one_clear_error(tmp_path):
    cfg = tmp_path / "h.cfg"
    cfg.write_text("backend x\n  balance nonsense\n")
    with pytest.raises(haproxy.ClusterStartError, match="HAProxy rejected its configuration"):
        haproxy.check_config(haproxy.find_haproxy(), cfg)


def test_slot_pointed_at_a_healthy_port_comes_up_and_back_to_maint(tmp_path):
    sock = tmp_path / "h.sock"
    cfg = tmp_path / "h.cfg"
    lb_port, stats_port, plain_port = free_ports(3)
    cfg.write_text(haproxy.render_config(lb_port, stats_port, sock, 4, "/", plain_port))
    backend_port = free_port()
    web = spawn(["python3", "-m", "http.server", str(backend_port), "--bind", "127.0.0.1"], tmp_path / "web.log")
    lb = spawn([haproxy.find_haproxy(), "-db", "-f", str(cfg)], tmp_path / "lb.log")
    try:
        admin = haproxy.AdminSocket(sock)
        wait_for(lambda: sock.exists(), 10, "the admin socket")
        states = wait_for(admin.servers, 10, "server states")
        assert [s.name for s in states] == ["r1", "r2", "r3", "r4"]
        assert all(s.state == "maint" for s in states)
        admin.point_slot(2, backend_port)
        wait_for(lambda: admin.servers()[1].up, 10, "slot r2 up")
        r2 = admin.servers()[1]
        assert (r2.name, r2.port) == ("r2", backend_port)
        plain = haproxy.AdminSocket(sock, backend=haproxy.PLAIN_BACKEND)
        wait_for(lambda: plain.servers()[1].up, 15, "slot r2 up behind the plain front too")
        admin.retire_slot(2)
        assert admin.servers()[1].state == "maint" and plain.servers()[1].state == "maint"
    finally:
        end_groups([web.pid, lb.pid], 2)
        web.wait()
        lb.wait()
