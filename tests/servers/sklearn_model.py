"""Build a tiny scikit-learn classifier and the MLServer settings that serve it.

Why: MLServer is the Open Inference Protocol (V2) server the tests use as a real
third-party replica; it needs a model on disk and a `model-settings.json` naming its
runtime. The inputs are declared in the settings because MLServer's
`GET /v2/models/NAME` only lists what the settings declare (the sklearn runtime infers
nothing), and the project's probes read the input schema from there.

Runs in `.venv-mlserver`'s python (it needs scikit-learn and joblib):

    .venv-mlserver/bin/python tests/servers/sklearn_model.py DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MODEL_NAME = "iris"
INPUT_NAME = "input-0"
N_FEATURES = 4
SEED = 0
#: Written last: a directory without it is an interrupted build and is rebuilt.
STAMP = ".complete"


def model_settings() -> dict:
    """MLServer's per-model settings; `uri` is relative to the settings file."""
    return {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "v1"},
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, N_FEATURES]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
    }


def server_settings() -> dict:
    """Server-wide settings shared by every replica (the ports come from the command line
    environment, per replica). `parallel_workers: 0` runs inference in the server process
    itself: the default (1) forks a worker process per replica, which doubles RSS and puts
    a second process in the group for no gain with a model this small."""
    return {"debug": False, "parallel_workers": 0, "load_models_at_startup": True}


def complete(dir: Path) -> bool:
    return (dir / STAMP).exists()


def build(dir: Path) -> Path:
    """Train and save into `dir` (created); a complete `dir` is left as it is."""
    dir = Path(dir)
    if complete(dir):
        return dir
    import joblib
    from sklearn.datasets import make_classification
    from sklearn.linear_model import LogisticRegression

    dir.mkdir(parents=True, exist_ok=True)
    x, y = make_classification(n_samples=200, n_features=N_FEATURES, n_informative=3, n_redundant=0,
                               n_classes=3, random_state=SEED)
    model = LogisticRegression(max_iter=500, random_state=SEED).fit(x.astype("float32"), y)
    joblib.dump(model, dir / "model.joblib")
    (dir / "model-settings.json").write_text(json.dumps(model_settings(), indent=2) + "\n")
    (dir / "settings.json").write_text(json.dumps(server_settings(), indent=2) + "\n")
    (dir / STAMP).write_text(json.dumps({"seed": SEED, "features": N_FEATURES}) + "\n")
    return dir


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} DIR")
    print(build(Path(sys.argv[1])))
