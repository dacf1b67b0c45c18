"""Leak-free evaluation, reports (rendered in a real browser) and MLflow logging."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.evaluation.evaluate import evaluate_models
from recsys_ebm.evaluation.protocol import evaluate_ranking
from recsys_ebm.models.ease import EASE
from recsys_ebm.models.popularity import Popularity

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    log = planted_communities(n_users=400, n_items=150, n_interactions=16_000, seed=2)
    p = tmp_path_factory.mktemp("log") / "log.parquet"
    log.drop("community").write_parquet(p)
    ds = prepare_dataset(p, split="random", test_fraction=0.2, valid_fraction=0.1, seed=0)
    ds.save(tmp_path_factory.mktemp("ds") / "data")
    return ds


def test_leaky_call_is_detected(dataset):
    model = Popularity().fit(dataset.train)
    leaky_history = (dataset.history("test") + dataset.test).tocsr()
    with pytest.raises(ValueError, match="appear in both history and target"):
        evaluate_ranking(model, leaky_history, dataset.test)


def test_masking_uses_history_so_scores_are_honest(dataset):
    # with the true history masked, EASE must beat popularity on planted communities
    pop = evaluate_ranking(Popularity().fit(dataset.train), dataset.history("test"), dataset.test)
    ease = EASE(l2=50.0, l2_grid=(), device="cpu").fit(dataset.train)
    res = evaluate_ranking(ease, dataset.history("test"), dataset.test)
    assert res["ndcg@10"] > pop["ndcg@10"] + 0.05
    items, _ = ease.recommend(dataset.history("test"), n=10)
    hist = dataset.history("test")
    for u in range(0, hist.shape[0], 37):
        assert not set(items[u]) & set(hist[u].indices)


def test_evaluate_models_significance_and_ci(dataset):
    models = {
        "popularity": Popularity().fit(dataset.train),
        "ease": EASE(l2=50.0, l2_grid=(), device="cpu").fit(dataset.train),
    }
    res = evaluate_models(dataset, models, (5, 10), n_boot=200)
    assert res.best_baseline == "ease"
    sig = res.significance["popularity"]
    assert sig["mean_diff"] < 0 and sig["t_pvalue"] < 0.01
    for m in res.models:
        for k, (lo, hi) in m.ci.items():
            assert lo <= m.means[k] <= hi, k
        assert m.energies_pos.mean() < m.energies_rand.mean(), "positives get lower energy"


def _run(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "recsys_ebm", *args], capture_output=True, text=True, cwd=cwd
    )


def test_cli_evaluate_report_mlflow_and_browser(dataset, tmp_path):
    data = str(dataset.path)
    for m, extra in (("popularity", []), ("ease", ["--set", "l2_grid=[]"])):
        r = _run(
            "train",
            "--data",
            data,
            "--model",
            m,
            "--out",
            str(tmp_path / m),
            *extra,
            "--no-mlflow",
            cwd=tmp_path,
        )
        assert r.returncode == 0, r.stderr
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    report = tmp_path / "report"
    r = _run(
        "evaluate",
        "--data",
        data,
        "--model",
        str(tmp_path / "popularity"),
        "--model",
        str(tmp_path / "ease"),
        "--k",
        "5,10",
        "--report",
        str(report),
        "--tracking-uri",
        uri,
        "--bootstrap",
        "200",
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    assert "ndcg@10" in r.stdout
    page = (report / "report.html").read_text()
    md = (report / "report.md").read_text()
    assert "| ease |" in md and "**" in md
    assert "class='best'" in page and "Recall denominator: |test items|" in page
    imgs = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    assert len(imgs) == 3
    from PIL import Image

    for b64 in imgs:
        img = Image.open(io.BytesIO(base64.b64decode(b64)))
        img.verify()
        assert img.size[0] > 300
    # MLflow: one evaluate run with per-model metrics and the report as artifacts
    import mlflow

    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["recsys-ebm"], output_format="list")
    ev = [x for x in runs if x.data.tags.get("stage") == "evaluate"]
    assert len(ev) == 1
    assert ev[0].data.metrics["ease.ndcg_at_10"] > ev[0].data.metrics["popularity.ndcg_at_10"]
    arts = [a.path for a in mlflow.MlflowClient().list_artifacts(ev[0].info.run_id, "report")]
    assert "report/report.html" in arts
    per_model = [x for x in runs if x.data.tags.get("stage") == "evaluate-model"]
    assert {x.data.tags["model"] for x in per_model} == {"popularity", "ease"}
    assert all(x.data.tags["mlflow.parentRunId"] == ev[0].info.run_id for x in per_model)
    # existing report is not clobbered
    r = _run(
        "evaluate",
        "--data",
        data,
        "--model",
        str(tmp_path / "ease"),
        "--report",
        str(report),
        "--no-mlflow",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "--overwrite" in r.stderr
    if CHROMIUM is None:
        pytest.skip("chromium not installed (.ci/run installs Debian's chromium)")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chrome'}",
            f"--screenshot={shot}",
            "--window-size=1200,1800",
            (report / "report.html").as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    img = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert img.shape == (1800, 1200)
    assert img.std() > 20, "the rendered page is not blank"
    # the plots rendered: a lot of non-white, non-gray pixels (the coloured lines and bars)
    rgb = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int64)
    colourful = (rgb.max(axis=2) - rgb.min(axis=2)) > 60
    assert colourful.mean() > 0.005


def test_cli_evaluate_rejects_model_from_another_dataset(dataset, tmp_path):
    other = prepare_dataset(split="random", seed=0)  # bundled ml-latest-small
    other.save(tmp_path / "other")
    r = _run(
        "train",
        "--data",
        str(tmp_path / "other"),
        "--model",
        "popularity",
        "--out",
        str(tmp_path / "pop"),
        "--no-mlflow",
        cwd=tmp_path,
    )
    assert r.returncode == 0
    r = _run(
        "evaluate",
        "--data",
        str(dataset.path),
        "--model",
        str(tmp_path / "pop"),
        "--report",
        str(tmp_path / "rep"),
        "--no-mlflow",
        cwd=tmp_path,
    )
    assert r.returncode == 2 and "trained on" in r.stderr
    assert not (tmp_path / "rep").exists()
