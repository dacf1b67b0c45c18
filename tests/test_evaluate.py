"""Leak-free evaluation, reports (rendered in a real browser) and MLflow logging."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

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
    from recsys_ebm.batch import model_version

    for x in per_model:  # the exact contents scored: promotion reads this model's figure only
        assert x.data.tags["model_version"] == model_version(Path(x.data.tags["model_dir"]))
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


def test_report_puts_the_verdict_first_and_titles_every_plot(dataset, tmp_path):
    import matplotlib.pyplot as plt
    from PIL import Image

    from recsys_ebm.evaluation.report import report_figures, verdict_rows, write_report

    ease = EASE(l2=50.0, l2_grid=(), device="cpu").fit(dataset.train)
    models = {"popularity": Popularity().fit(dataset.train), "ease": ease, "ease_twin": ease}
    res = evaluate_models(dataset, models, (5, 10), n_boot=100)
    assert res.best_baseline == "ease" and res.primary == "ndcg@5"
    rows = {r["model"]: r for r in verdict_rows(res, n_boot=200)}
    assert rows["ease"]["verdict"] == "best baseline"
    assert rows["popularity"]["verdict"] == "worse" and rows["popularity"]["t_pvalue"] < 0.01
    lo, hi = rows["popularity"]["diff_ci"]
    assert lo <= rows["popularity"]["diff"] <= hi < 0
    # the same model twice: every per-user difference is 0, so no significant difference
    assert rows["ease_twin"]["verdict"] == "no significant difference"

    write_report(res, tmp_path / "rep", dataset=dataset, meta={})
    page = (tmp_path / "rep" / "report.html").read_text()
    md = (tmp_path / "rep" / "report.md").read_text()
    for text in (page, md):
        verdict, wide = text.index("Verdict on ndcg@5"), text.index("All metrics")
        assert verdict < wide and text.index("precision@10") > wide, "verdict table comes first"
        block = text[verdict:wide]
        assert "best baseline" in block and "Δ vs ease" in block and "95% CI of Δ" in block
        assert "p (paired t-test)" in block
        pop_p = f"{rows['popularity']['t_pvalue']:.2g}"
        assert pop_p in block and "worse than ease" in block
        assert "no significant difference from ease" in block
    # the wide table sits in a horizontally scrollable container of its own
    assert re.search(r"<div class='scroll'><table><tr><th>model</th><th>recall@5", page)
    assert page.index("</table></div>", page.index("All metrics")) < page.index("Plots")

    figures = report_figures(res)
    assert len(figures) == 3
    for caption, fig in figures.items():
        assert fig._suptitle is not None and fig._suptitle.get_text(), caption
        visible = [ax for ax in fig.axes if ax.get_visible()]
        assert visible and all(ax.get_title() for ax in visible), caption
        if caption.startswith("Energy"):  # positives stay visible next to the random spike
            assert all(ax.get_yscale() == "log" for ax in visible)
        plt.close(fig)
    titles = [
        Image.open(io.BytesIO(base64.b64decode(b))).info.get("Title")
        for b in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page)
    ]
    assert len(titles) == 3 and all(titles), titles
    assert any("held-out positives vs random items" in t for t in titles)


def test_report_without_a_baseline_says_there_is_no_verdict(dataset, tmp_path):
    from recsys_ebm.evaluation.report import verdict_rows, write_report
    from recsys_ebm.models.rbm import RBM

    rbm = RBM(n_hidden=8, epochs=1, patience=0, progress=False, seed=0, device="cpu")
    res = evaluate_models(dataset, {"rbm": rbm.fit(dataset.train)}, (10,), n_boot=20)
    assert res.best_baseline is None and verdict_rows(res) == []
    write_report(res, tmp_path / "rep", dataset=dataset, meta={})
    for name in ("report.html", "report.md"):
        text = (tmp_path / "rep" / name).read_text()
        assert "No baseline (popularity, ease, als, bpr) among the evaluated models" in text
        assert text.index("Verdict on ndcg@10") < text.index("All metrics")
