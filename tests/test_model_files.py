"""Corrupt, truncated, incomplete or unsafe model files and checkpoints: a ValueError
(ModelFileError) that names the file and says how to recover; never a KeyError, a safetensors or
pickle error, or a traceback from deep inside the loader."""

from __future__ import annotations

import argparse
import shutil

import pytest
import torch
from safetensors.torch import save_file

from recsys_ebm.data.synthetic import checkerboard
from recsys_ebm.diagnostics import ModelFileError
from recsys_ebm.io import load_checkpoint, save_checkpoint
from recsys_ebm.models import load_model
from recsys_ebm.models.popularity import Popularity
from recsys_ebm.models.rbm import RBM


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    board = checkerboard(seed=0)
    path = tmp_path_factory.mktemp("models") / "rbm"
    RBM(n_hidden=4, epochs=1, device="cpu", progress=False).fit(board.train).save(path)
    return path


@pytest.fixture
def copy(saved, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(saved, dst)
    return dst


def test_intact_model_loads(copy):
    assert load_model(copy).W.shape == (32, 4)


def test_truncated_weights(copy):
    f = copy / "weights.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(
        ModelFileError, match=r"weights\.safetensors: corrupt or truncated.*retrain"
    ):
        load_model(copy)


def test_garbage_weights(copy):
    (copy / "weights.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match=r"weights\.safetensors: corrupt or truncated"):
        RBM.load(copy)


def test_missing_tensor_is_named(copy):
    save_file({"b": torch.zeros(32), "c": torch.zeros(4)}, str(copy / "weights.safetensors"))
    with pytest.raises(ModelFileError, match=r"weights\.safetensors: missing tensor .*'W'"):
        load_model(copy)


def test_wrongly_shaped_tensors_of_another_model(copy, tmp_path):
    pop = Popularity().fit(checkerboard(seed=0).train)
    pop.save(tmp_path / "pop")
    shutil.copy(tmp_path / "pop" / "weights.safetensors", copy / "weights.safetensors")
    with pytest.raises(ModelFileError, match=r"missing tensor or field 'W' \(the file holds "):
        load_model(copy)


@pytest.mark.parametrize("content", [b"\x00garbage{", b"[1, 2]", b'{"format_version": 1}'])
def test_garbage_model_json(copy, content):
    (copy / "model.json").write_bytes(content)
    with pytest.raises(ModelFileError, match=r"model\.json: .*(corrupt|missing key)"):
        load_model(copy)


def test_garbage_vocabulary(copy, saved):
    (copy / "items.json").write_text("{not json")
    with pytest.raises(ModelFileError, match=r"items\.json: corrupt JSON"):
        load_model(copy)


def test_missing_weights_file(copy):
    (copy / "weights.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights.safetensors"):
        load_model(copy)


def test_checkpoint_pickling_an_object_is_refused_as_unsafe(tmp_path):
    torch.save({"fingerprint": "x", "payload": argparse.Namespace(a=1)}, tmp_path / "checkpoint.pt")
    with pytest.raises(
        ModelFileError, match=r"checkpoint\.pt is corrupt, truncated or unsafe.*remove"
    ):
        load_checkpoint(tmp_path)


def test_truncated_checkpoint(tmp_path):
    save_checkpoint(tmp_path, {"W": torch.ones(100, 10), "epoch": 3})
    assert load_checkpoint(tmp_path)["epoch"] == 3
    f = tmp_path / "checkpoint.pt"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(ModelFileError, match=r"checkpoint\.pt is corrupt"):
        load_checkpoint(tmp_path)


def test_training_refuses_an_unsafe_checkpoint_before_any_work(tmp_path):
    torch.save({"payload": argparse.Namespace(a=1)}, tmp_path / "checkpoint.pt")
    model = RBM(n_hidden=4, epochs=1, device="cpu", progress=False, checkpoint_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unsafe"):
        model.fit(checkerboard(seed=0).train)
    assert model.fit_info == {}
