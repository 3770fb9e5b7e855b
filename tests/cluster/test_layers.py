"""The layer contracts in .importlinter, checked the way `make lint` checks them (on the tree a
wheel installs), hold on this code and break on a planted import of each kind they forbid."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.checkout import clean_copy

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (the test extra)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist),
                            str(clean_copy(tmp_path_factory.mktemp("src")))], capture_output=True, text=True,
                           timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    out = tmp_path_factory.mktemp("site")
    (wheel,) = dist.glob("*.whl")
    zipfile.ZipFile(wheel).extractall(out)
    return out


def lint(site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([str(LINT), "--config", str(REPO / ".importlinter"), "--no-cache"], cwd=site, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_contracts_hold_on_this_code(site):
    done = lint(site)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("module, planted, contract", [
    ("ground/procs.py", "import inferchaos.targets.local.cluster", "the ground floor"),
    ("targets/local/cluster.py", "import inferchaos.probes.window", "targets import no"),
    ("faults/local/base.py", "import inferchaos.load.records", "faults import no"),
    ("engine.py", "import load.records", "nothing imports the layers by their top-level names"),
    ("reports/timeline.py", "import inferchaos.probes.window", "reports draw from data"),
])
def test_a_planted_import_breaks_its_contract(site, tmp_path, module, planted, contract):
    copy = tmp_path / "site"
    shutil.copytree(site, copy)
    target = copy / "inferchaos" / module
    target.write_text(target.read_text() + f"\n{planted}  # planted\n")
    done = lint(copy)
    assert done.returncode != 0, done.stdout[-3000:]
    broken = done.stdout[done.stdout.index("Broken contracts"):] if "Broken contracts" in done.stdout else ""
    assert contract in broken.replace("\n", " "), done.stdout[-3000:]
