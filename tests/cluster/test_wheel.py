"""inferchaos as a team uses it: the wheel built from this checkout, installed into a fresh
venv outside it with none of the extras, and one experiment written in an empty folder
against that team's own SLO file.

What it shows: the plugin loads by its entry point (no conftest.py, no checkout on the
path), the fixtures and fault classes are importable from the package, the only import
package installed is `inferchaos` (no top-level `load` or `reports` to collide with), the
extras really are optional (no kubernetes, pynvml, allure or matplotlib), and the run
writes its report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.support.checkout import clean_copy
from tests.support.leftovers import processes_mentioning

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("load", "probes", "faults", "targets", "reports")

EXPERIMENT = '''
"""Our own crash experiment: nothing here comes from the inferchaos repository."""
import pytest

from inferchaos.faults.specs.replica_crash import replica_crash


@pytest.mark.chaos(owner="team-a")
def test_one_replica_dies(run_experiment, target):
    result = run_experiment(replica_crash.on(target, replicas="1"))
    assert result.verdict == "pass", result.failure_message()
'''

SLO = '''
[defaults.slo]
availability = 0.95
p99_ms = { value = "baseline * 3 + 300", limit = 3000 }

[defaults.phases]
rate = 40
baseline_s = 3
hold_s = 4
recovery_window_s = 6
'''


def run(argv: list[str], **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(clean_copy(
        tmp_path_factory.mktemp("src")))], timeout=600)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = dist.glob("inferchaos-*.whl")
    return path


def test_the_wheel_holds_one_import_package_and_the_files_it_runs_with(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"inferchaos"}, tops
    for layer in LAYERS:
        assert f"inferchaos/{layer}/__init__.py" in names, layer
    for needed in ("inferchaos/experiments/slo.toml", "inferchaos/load/locustfile.py", "inferchaos/targets/local/server.py",
                   "inferchaos/faults/cuda_shim.c", "inferchaos/targets/local/fakecuda/cudart.c"):
        assert needed in names, needed
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "[pytest11]" in meta and "inferchaos = inferchaos.plugin" in meta, meta


def test_a_team_runs_an_experiment_from_an_empty_folder_with_only_the_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    installed = run([str(py), "-m", "pip", "install", "-q", str(wheel)], timeout=900)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    # the extras stayed out, and nothing but inferchaos came in under our layers' names
    probe = ("import importlib.util as u; print([m for m in ('kubernetes', 'pynvml', 'allure', 'matplotlib', "
             + ", ".join(repr(layer) for layer in LAYERS) + ") if u.find_spec(m)])")
    absent = run([str(py), "-c", probe], cwd=tmp_path, timeout=60)
    assert absent.returncode == 0 and absent.stdout.strip() == "[]", absent.stdout + absent.stderr

    team = tmp_path / "team"
    team.mkdir()
    (team / "test_crash.py").write_text(textwrap.dedent(EXPERIMENT))
    (team / "slo.toml").write_text(textwrap.dedent(SLO))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    done = run([str(venv / "bin" / "pytest"), "test_crash.py", "-q", "-p", "no:cacheprovider", "--slo", "slo.toml",
                "--chaos-report", "report", "--ledger", "ledger.jsonl"], cwd=team, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    summary = json.loads((team / "report" / "summary.json").read_text())
    (run_,) = summary["experiments"]
    assert run_["verdict"] == "pass", run_
    (availability,) = [s for s in run_["slos"] if s["name"] == "availability"]
    assert "0.95" in availability["objective"], availability  # the team's file, not the shipped one
    assert (team / "report" / "summary.html").is_file()
    assert "matplotlib is missing" in done.stdout + done.stderr  # no timeline, and it says why
    # the CLI came with it, and the ledger it wrote is closed
    recover = run([str(venv / "bin" / "inferchaos"), "recover", "--ledger", "ledger.jsonl"], cwd=team, env=env,
                  timeout=120)
    assert recover.returncode == 0 and "nothing to recover" in recover.stdout, recover.stdout + recover.stderr
    # the C parts compile from the installed sources, into the cache it is told
    built = run([str(py), "-m", "inferchaos.ground.native"], cwd=team, timeout=120,
                env={**env, "INFERCHAOS_NATIVE_DIR": str(tmp_path / "native")})
    assert built.returncode == 0, built.stdout + built.stderr
    assert sorted(p.name for p in (tmp_path / "native").glob("*/*.so*")) == [
        "libcuda.so.1", "libcudart.so.12", "libinferchaos_cudashim.so"], built.stdout
    assert processes_mentioning(str(venv)) == []
