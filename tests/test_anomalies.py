import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp

from recsys_ebm.anomalies import anomaly_scores, inject_shilling_profiles, roc_auc
from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities
from recsys_ebm.models.popularity import Popularity
from recsys_ebm.models.rbm import RBM


def test_roc_auc_hand_computed():
    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert roc_auc(np.array([2.0, 0.0]), np.array([1.0])) == 0.5


def test_free_energy_flags_injected_profiles():
    log = planted_communities(n_users=600, n_items=200, n_interactions=24_000, seed=0)
    x = sp.csr_matrix(
        (np.ones(log.height, np.float32), (log["user_id"].to_numpy(), log["item_id"].to_numpy())),
        shape=(600, 200),
    )
    x.data[:] = 1.0
    train, held = x[:500], x[500:]
    model = RBM(n_hidden=32, epochs=15, batch_size=20, progress=False, device="cpu").fit(train)
    fill = int(np.median(train.getnnz(axis=1)))
    for kind in ("random", "average"):
        attack = inject_shilling_profiles(train, 100, kind, filler_size=fill, target_item=7)
        auc = roc_auc(anomaly_scores(model, attack), anomaly_scores(model, held))
        assert auc > 0.9, (kind, auc)
    with pytest.raises(TypeError, match="free energy"):
        anomaly_scores(Popularity().fit(train), held)


def test_cli_train_rbm_and_anomalies(tmp_path):
    log = planted_communities(n_users=200, n_items=80, n_interactions=6_000, seed=1)
    p = tmp_path / "log.parquet"
    log.drop("community").write_parquet(p)
    prepare_dataset(p).save(tmp_path / "data")
    run = [sys.executable, "-m", "recsys_ebm"]
    r = subprocess.run(
        run
        + [
            "train",
            "--data",
            str(tmp_path / "data"),
            "--model",
            "rbm",
            "--set",
            "epochs=3",
            "--set",
            "n_hidden=16",
            "--out",
            str(tmp_path / "rbm"),
            "--no-mlflow",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    out = tmp_path / "anomalies.csv"
    r = subprocess.run(
        run
        + [
            "anomalies",
            "--model",
            str(tmp_path / "rbm"),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(out),
            "--top",
            "3",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    df = pl.read_csv(out)
    assert df.height == 200 and df["rank"].to_list() == list(range(1, 201))
    assert (df["free_energy"].diff().drop_nulls() <= 0).all()
    r = subprocess.run(
        run
        + [
            "anomalies",
            "--model",
            str(tmp_path / "rbm"),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "x.txt"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "--out" in r.stderr
