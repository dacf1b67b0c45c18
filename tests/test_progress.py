"""Progress reporting (recsys_ebm.progress): timestamped lines in logs, bars on terminals, and the
training loops, EASE, validation and evaluation wired to it ("first hour" issue: nothing was
printed for minutes when output went to a file)."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from recsys_ebm.data.synthetic import checkerboard
from recsys_ebm.progress import format_duration, progress

ROOT = Path(__file__).resolve().parents[1]
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ recsys-ebm "


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_lines_have_timestamp_counts_values_and_eta():
    out = io.StringIO()
    bar = progress(3, desc="train rbm", unit="epoch", interval=0, stream=out)
    for epoch in range(3):
        bar.update(1, loss=0.5 - epoch / 10, **{"valid ndcg@10": 0.3 + epoch / 100})
    bar.close()
    lines = out.getvalue().splitlines()
    assert re.fullmatch(STAMP + r"train rbm: started \(3 epochs\)", lines[0])
    assert re.fullmatch(
        STAMP + r"train rbm: epoch 2/3 loss 0\.4000 valid ndcg@10 0\.3100 eta \d+s", lines[2]
    )
    assert re.fullmatch(STAMP + r"train rbm: epoch 3/3 loss 0\.3000 .* done in \d+s", lines[-1])
    assert len(lines) == 5  # start, 3 epochs, final


def test_lines_are_throttled_to_the_interval_but_start_and_end_always_print():
    out = io.StringIO()
    for _ in progress(range(1000), desc="evaluate", unit="block", interval=3600, stream=out):
        pass
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("evaluate: started (1000 blocks)")
    assert "block 1000/1000" in lines[1] and "done in" in lines[1]


def test_inner_bars_print_no_start_or_final_line():
    out = io.StringIO()
    for _ in progress(
        range(5), desc="validate rbm", unit="block", interval=3600, stream=out, leave=False
    ):
        pass
    lines = out.getvalue().splitlines()
    # a fresh stream: the first update is due at once, then the hour-long interval holds
    assert len(lines) == 1 and lines[0].endswith("validate rbm: block 1/5 eta 0s")
    assert not any("started" in line or "done in" in line for line in lines)


def test_the_throttle_is_per_stream_and_a_new_stream_starts_fresh():
    """Regression: the throttle was keyed on id(stream), so a new stream that reused a freed
    one's id inherited its last-line time and printed nothing (failed in CI, passed locally)."""
    for _ in range(20):  # freed streams' ids are reused; each new one must still get its line
        out = io.StringIO()
        for _ in progress(range(3), desc="d", unit="u", interval=3600, stream=out, leave=False):
            pass
        assert len(out.getvalue().splitlines()) == 1
        del out


def test_terminal_gets_a_tqdm_bar_not_log_lines():
    out = FakeTerminal()
    bar = progress(4, desc="train rbm", unit="epoch", interval=0, stream=out)
    bar.update(2, loss=0.25)
    bar.close()
    text = out.getvalue()
    assert "train rbm" in text and "2/4" in text and "loss=0.2500" in text
    assert not re.search(STAMP, text)


def test_disabled_prints_nothing_and_interval_comes_from_the_environment(monkeypatch):
    out = io.StringIO()
    bar = progress(2, desc="x", enabled=False, stream=out)
    bar.update(2)
    bar.close()
    assert out.getvalue() == ""
    monkeypatch.setenv("RECSYS_EBM_PROGRESS_INTERVAL", "12.5")
    assert progress(1, desc="x", stream=io.StringIO()).interval == 12.5
    monkeypatch.setenv("RECSYS_EBM_PROGRESS_INTERVAL", "soon")
    with pytest.raises(ValueError, match="RECSYS_EBM_PROGRESS_INTERVAL.*'soon'"):
        progress(1, desc="x", stream=io.StringIO())


def test_format_duration():
    assert [format_duration(s) for s in (4.3, 75.2, 3725)] == ["4s", "1m15s", "1h02m"]


def test_rbm_training_reports_epoch_loss_validation_and_eta_in_a_log(monkeypatch, capsys):
    from recsys_ebm.models.rbm import RBM

    monkeypatch.setenv("RECSYS_EBM_PROGRESS_INTERVAL", "0")
    board = checkerboard(seed=0)
    RBM(n_hidden=8, epochs=3, patience=0, device="cpu").fit(board.train, board.test)
    err = capsys.readouterr().err
    assert re.search(STAMP + r"train rbm: started \(3 epochs\)", err)
    assert re.search(
        STAMP + r"train rbm: epoch 2/3 loss \d\.\d{4} valid ndcg@10 \d\.\d{4} eta \d+s", err
    )
    assert re.search(STAMP + r"train rbm epoch 1/3: batch \d+/\d+ eta", err)  # inside an epoch
    assert re.search(STAMP + r"train rbm: epoch 3/3 .*done in", err)


def test_ease_reports_its_solves(monkeypatch, capsys):
    from recsys_ebm.models.ease import EASE

    monkeypatch.setenv("RECSYS_EBM_PROGRESS_INTERVAL", "0")
    board = checkerboard(seed=0)
    EASE(l2_grid=(10.0, 100.0), device="cpu").fit(board.train, board.test)
    err = capsys.readouterr().err
    assert re.search(STAMP + r"train ease: started \(4 steps\)", err)
    assert re.search(STAMP + r"train ease: step 2/4 step solve l2=10 valid ndcg@10 \d", err)
    assert re.search(STAMP + r"train ease: step 4/4 .*done in", err)


def test_progress_false_keeps_training_silent(monkeypatch, capsys):
    from recsys_ebm.models.rbm import RBM

    monkeypatch.setenv("RECSYS_EBM_PROGRESS_INTERVAL", "0")
    board = checkerboard(seed=0)
    RBM(n_hidden=8, epochs=2, device="cpu", progress=False).fit(board.train, board.test)
    assert "recsys-ebm" not in capsys.readouterr().err


def test_cli_train_with_stderr_to_a_file_writes_timestamped_lines(tmp_path):
    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.data.synthetic import planted_communities

    log = planted_communities(n_users=60, n_items=40, n_interactions=1200, seed=1)
    log.drop("community").write_csv(tmp_path / "log.csv")
    prepare_dataset(tmp_path / "log.csv", seed=0).save(tmp_path / "data")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "RECSYS_EBM_PROGRESS_INTERVAL": "0",
    }
    argv = [
        "train",
        "--data",
        str(tmp_path / "data"),
        "--model",
        "rbm",
        "--set",
        "epochs=2",
        "--set",
        "n_hidden=8",
        "--set",
        "validate_every=1",  # a score on every epoch's line
        "--out",
        str(tmp_path / "model"),
        "--no-mlflow",
    ]
    with open(tmp_path / "stderr.log", "w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "recsys_ebm", *argv],
            cwd=tmp_path,
            env=env,
            stderr=err,
            stdout=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    text = (tmp_path / "stderr.log").read_text()
    assert proc.returncode == 0, text
    assert re.search(STAMP + r"train rbm: epoch 1/2 loss \d\.\d{4} valid ndcg@10 .* eta", text)
    assert re.search(STAMP + r"train rbm: epoch 2/2 .*done in", text)


def test_a_resumed_run_counts_from_its_checkpoint():
    out = io.StringIO()
    bar = progress(10, desc="train rbm", unit="epoch", interval=0, stream=out, initial=6)
    assert bar.eta() is None  # no epoch of this run yet: no pace to extrapolate
    bar.update(1, loss=0.5)
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("train rbm: started (10 epochs), resumed at epoch 6")
    assert re.search(r"train rbm: epoch 7/10 loss 0\.5000 eta \d+s$", lines[1])
