"""Bad-input cases of the "train" area: diverging or invalid training options (nothing saved) and
corrupt, truncated or unsafe model files and checkpoints (a message naming the file, no traceback).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.cli_cases import Case, World
from tests.cli_cases._world import dataset, popularity_model


def _train(model: str, *sets: str, mlflow: bool = False):
    """argv of ``train --model MODEL --set ...`` writing ``tmp/model``."""

    def argv(w: World, t: Path) -> list[str]:
        out = ["train", "--data", str(dataset(w)), "--model", model, "--out", str(t / "model")]
        for s in sets:
            out += ["--set", s]
        return out + ([] if mlflow else ["--no-mlflow"])

    return argv


def _model_dir(t: Path) -> list[Path]:
    return [t / "model"]


def _broken_copy(t: Path, w: World, name: str, content: bytes | None) -> Path:
    """A copy of the shared popularity model with file ``name`` replaced (None: truncated)."""
    dst = t / "broken-model"
    shutil.copytree(popularity_model(w), dst)
    f = dst / name
    if content is None:
        data = f.read_bytes()
        f.write_bytes(data[: len(data) // 2])
    else:
        f.write_bytes(content)
    return dst


def _evaluate(name: str, content: bytes | None):
    def argv(w: World, t: Path) -> list[str]:
        model = _broken_copy(t, w, name, content)
        return [
            "evaluate",
            "--data",
            str(dataset(w)),
            "--model",
            str(model),
            "--report",
            str(t / "report"),
            "--no-mlflow",
        ]

    return argv


def _recommend(name: str, content: bytes | None):
    def argv(w: World, t: Path) -> list[str]:
        model = _broken_copy(t, w, name, content)
        return [
            "recommend",
            "--model",
            str(model),
            "--data",
            str(dataset(w)),
            "--out",
            str(t / "recs.parquet"),
        ]

    return argv


def _missing_tensor() -> bytes:
    """A valid safetensors file that lacks the popularity model's ``item_energy`` tensor."""
    import torch
    from safetensors.torch import save as save_bytes

    return save_bytes({"W": torch.zeros(3)})


def _malicious_checkpoint(w: World, t: Path) -> list[str]:
    """A checkpoint.pt that pickles an arbitrary object (refused by weights_only loading)."""
    import argparse

    import torch

    ckpt = t / "ckpt"
    ckpt.mkdir()
    torch.save(
        {"fingerprint": "x", "payload": argparse.Namespace(cmd="echo pwned")},
        ckpt / "checkpoint.pt",
    )
    return _train("rbm", "epochs=1", f"checkpoint_dir={str(ckpt)!r}")(w, t)


CASES = [
    Case(
        id="train-rbm-learning-rate-nan",
        argv=_train("rbm", "learning_rate=nan"),
        expect=("RBMConfig.learning_rate", "finite", "nan"),
        absent=lambda w, t: _model_dir(t),
    ),
    Case(
        id="train-retriever-learning-rate-1e9-diverges",
        argv=_train("retriever", "learning_rate=1e9", "epochs=1", "embedding_size=8", "n_hidden=8"),
        expect=(
            "Retriever diverged at epoch 1, step 1",
            "lower learning_rate",
            "nothing was saved",
        ),
        absent=lambda w, t: _model_dir(t),
    ),
    Case(
        id="train-rbm-learning-rate-1e9-diverges",
        argv=_train("rbm", "learning_rate=1e9", "epochs=1", "n_hidden=8", mlflow=True),
        expect=("RBM diverged at epoch 1, step 1", "lower learning_rate", "nothing was saved"),
        absent=lambda w, t: _model_dir(t),
    ),
    Case(
        id="train-ease-dropout-1",
        argv=_train("ease", "dropout=1.0"),
        expect=("EASEConfig.dropout", "expected in [0, 1)", "1.0"),
        absent=lambda w, t: _model_dir(t),
    ),
    Case(
        id="train-rbm-average-1",
        argv=_train("rbm", "average=1.0"),
        expect=("RBMConfig.average", "expected a decay in [0, 1)", "1.0"),
        absent=lambda w, t: _model_dir(t),
    ),
    Case(
        id="train-ease-l2-grid-nan",
        argv=_train("ease", "l2_grid=[nan]"),
        expect=("EASEConfig.l2_grid", "finite"),
        absent=lambda w, t: _model_dir(t),
    ),
    Case(
        id="train-als-negative-regularization",
        argv=_train("als", "regularization=-100"),
        expect=("ALSConfig.regularization", ">= 0", "-100"),
        absent=lambda w, t: _model_dir(t),
    ),
    Case(
        id="train-malicious-checkpoint",
        argv=_malicious_checkpoint,
        expect=("checkpoint.pt", "unsafe", "remove it"),
        absent=lambda w, t: _model_dir(t),
    ),
    Case(
        id="train-evaluate-truncated-weights",
        argv=_evaluate("weights.safetensors", None),
        expect=("weights.safetensors", "corrupt or truncated", "retrain"),
        absent=lambda w, t: [t / "report"],
    ),
    Case(
        id="train-evaluate-weights-missing-tensor",
        argv=_evaluate("weights.safetensors", _missing_tensor()),
        expect=("weights.safetensors", "missing tensor or field 'item_energy'", "retrain"),
        absent=lambda w, t: [t / "report"],
    ),
    Case(
        id="train-recommend-garbage-model-json",
        argv=_recommend("model.json", b"\x00\x01garbage{"),
        expect=("model.json", "corrupt", "retrain"),
        absent=lambda w, t: [t / "recs.parquet"],
    ),
    Case(
        id="train-recommend-truncated-weights",
        argv=_recommend("weights.safetensors", None),
        expect=("weights.safetensors", "corrupt or truncated"),
        absent=lambda w, t: [t / "recs.parquet"],
    ),
    Case(
        id="train-evaluate-bootstrap-zero",
        argv=lambda w, t: [
            "evaluate",
            "--data",
            str(dataset(w)),
            "--model",
            str(popularity_model(w)),
            "--bootstrap",
            "0",
            "--report",
            str(t / "report"),
            "--no-mlflow",
        ],
        expect=("--bootstrap", "positive int"),
        absent=lambda w, t: [t / "report"],
    ),
]
