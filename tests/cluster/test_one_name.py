"""One name per module: the layers at the top of the repository are mapped into `inferchaos`
by pyproject.toml, with no links, and the mapping covers every package folder on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LAYERS = ("load", "probes", "faults", "targets", "reports")


def test_the_repository_holds_no_links():
    listed = subprocess.run(["git", "ls-files", "-s"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    links = [line.split("\t")[1] for line in listed.splitlines() if line.startswith("120000")]
    assert links == [], links


def test_every_package_folder_is_mapped_into_inferchaos():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {"inferchaos": "inferchaos", **tool["package-dir"]}
    on_disk: set[str] = set()
    for package, folder in dirs.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            on_disk.add(".".join((package, *rel)))
    listed = {p for p in tool["packages"] if not p.endswith(".fakecuda")}
    assert listed == on_disk, (sorted(on_disk - listed), sorted(listed - on_disk))
    assert {f"inferchaos.{layer}" for layer in LAYERS} <= set(dirs)


def test_the_installed_package_answers_by_one_name_only(tmp_path):
    """From outside the checkout: `inferchaos.load.records` is the file in load/, and the
    layers have no top-level name."""
    code = ("import importlib.util as u, json, inferchaos.load.records as r; "
            f"print(json.dumps([r.__file__, [m for m in {LAYERS!r} if u.find_spec(m)]]))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    where, tops = json.loads(out.stdout)
    assert Path(where) == REPO / "load" / "records.py"
    assert tops == []


def test_the_recorder_sees_an_import_by_the_top_level_name(tmp_path):
    """tests/support/modules_seen.py is what says a run imported no layer by its top-level name: planted,
    one such import must show in its record."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import tests.support.modules_seen as m; "
            "import load.records; print(m.RECORDER.report())")
    out = subprocess.run([sys.executable, "-c", code, str(REPO)], cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "'load'" in out.stdout and "'load.records'" in out.stdout, out.stdout
