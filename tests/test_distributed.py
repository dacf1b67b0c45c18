"""Data-parallel training (models/distributed.py) on CPU with gloo, 2 real processes.

Each test spawns its ranks (``torch.multiprocessing``, the environment torchrun would set) and
compares with a 1-process run in this process: the same seed and global batch give the same
parameters (the CD samples are drawn for the global batch on every rank), the gathered InfoNCE
loss and its gradient are the 1-process ones, a checkpoint written by 2 ranks resumes in 1, and a
real ``torchrun`` launch of ``recsys_ebm train --distributed`` leaves one MLflow run and one model.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.multiprocessing as mp

from recsys_ebm.models._retriever_loss import accidental_hit_mask, info_nce, log_expected_counts
from recsys_ebm.models.distributed import DataParallel, current, data_parallel, split_sizes
from recsys_ebm.models.rbm import RBM, RBMConfig
from recsys_ebm.models.retriever import Retriever, RetrieverConfig
from recsys_ebm.models.softmax_rbm import SoftmaxRBM

ROOT = Path(__file__).resolve().parents[1]
TOL = {"rtol": 1e-4, "atol": 1e-5}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, jobs: list, out: str) -> None:
    env = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)}
    os.environ.update(env, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with data_parallel(torch.device("cpu")) as dp:
        results = {name: fn(dp, *args) for name, fn, args in jobs}
    torch.save(results, f"{out}.{rank}")


def _spawn(jobs: list, tmp_path: Path, world: int = 2) -> list[dict]:
    """Run each ``(name, fn, args)`` of ``jobs`` as ``fn(dp, *args)`` on ``world`` ranks (one
    spawn: starting ranks costs seconds); each rank's ``{name: result}``."""
    out = str(tmp_path / "results")
    try:
        mp.spawn(_rank_main, args=(world, _port(), jobs, out), nprocs=world, join=True)
    except mp.ProcessRaisedException as exc:  # the free port was taken before rank 0 bound it
        if "DistNetworkError" not in str(exc) and "ddress already in use" not in str(exc):
            raise
        mp.spawn(_rank_main, args=(world, _port(), jobs, out), nprocs=world, join=True)
    return [torch.load(f"{out}.{r}", weights_only=False) for r in range(world)]


def _matrix(n_users: int, n_items: int, seed: int) -> sp.csr_matrix:
    """A random binary (U, I) matrix without empty rows."""
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.25
    dense[np.arange(n_users), np.arange(n_users) % n_items] = True
    return sp.csr_matrix(dense.astype(np.float32))


def _split(n_users: int, n_items: int, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Disjoint train and valid matrices (about 1 in 5 interactions held out)."""
    m = _matrix(n_users, n_items, seed).tocoo()
    held = np.random.default_rng(seed + 1).random(m.nnz) < 0.2
    held[np.unique(m.row, return_index=True)[1]] = False  # every user keeps one training item
    part = [
        sp.csr_matrix((m.data[k], (m.row[k], m.col[k])), shape=m.shape) for k in (~held, held)
    ]
    return part[0], part[1]


def _rbm_config(**kw) -> RBMConfig:
    fields = {
        "n_hidden": 8, "epochs": 3, "batch_size": 8, "patience": 0, "progress": False,
        "device": "cpu", "seed": 3,
    }  # fmt: skip
    if "objective" in RBMConfig.__dataclass_fields__:
        fields["objective"] = "cd"  # the CD-k trainer (the one this test is about)
    return RBMConfig(**{**fields, **kw})


def _fit_rbm(dp, cfg, train, valid):
    model = RBM(cfg).fit(train, valid)
    return {k: t.clone() for k, t in model.parameters().items()}, model.fit_info["history"]


def _fit_retriever(dp, kw, train, valid):
    model = Retriever(**kw).fit(train, valid)
    return {k: t.detach().clone() for k, t in model.net.state_dict().items()}, model.fit_info


def _ratings(n_users: int, n_items: int, seed: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Train and valid (U, I) matrices of ratings 1-5 (the binary split's pattern)."""
    rng = np.random.default_rng(seed + 7)
    train, valid = _split(n_users, n_items, seed)
    for m in (train, valid):
        m.data = rng.integers(1, 6, size=m.nnz).astype(np.float32)
    return train, valid


def _softmax_kw(**kw) -> dict:
    return {
        "n_hidden": 6, "epochs": 3, "batch_size": 7, "patience": 0, "progress": False,
        "device": "cpu", "seed": 5, **kw,
    }  # fmt: skip


def _fit_softmax(dp, kw, train, valid):
    model = SoftmaxRBM(**kw).fit(train, valid)
    return {k: t.clone() for k, t in model.parameters().items()}, model.fit_info["history"]


def _assert_params_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], **TOL, msg=k)


def test_split_sizes_cover_the_batch_contiguously():
    assert split_sizes(5, 2) == [3, 2] and split_sizes(1, 2) == [1, 0]
    assert DataParallel(1, 2, 1, torch.device("cpu")).bounds(5) == (3, 5)
    with pytest.raises(ValueError, match="rank: expected 0 <= rank < world_size"):
        DataParallel(2, 2, 0, torch.device("cpu"))
    with pytest.raises(ValueError, match="distributed: expected torchrun's environment"):
        with data_parallel(torch.device("cpu"), env={}):
            pass
    assert current() is None


#: the retriever's objectives: in-batch InfoNCE over interactions (gathered negatives) and,
#: where the config has it, the user-level sampled softmax
_OBJECTIVES = {"objective": "interaction"}
if "objective" not in RetrieverConfig.__dataclass_fields__:
    _OBJECTIVES = {}


def _retriever_kw(**kw) -> dict:
    return {
        "embedding_size": 8, "n_hidden": 8, "epochs": 2, "batch_size": 23, "patience": 0,
        "history_dropout": 0.3, "user_embedding": True, "user_id_dropout": 0.2,
        "negatives": "uniform", "n_negatives": 5, "progress": False, "device": "cpu", "seed": 1,
        # fp32: under bf16 autocast (a CPU with native bf16) each rank rounds its partial
        # products apart, equal to one process only to bf16 precision; this checks the algorithm
        "mixed_precision": False,
        **_OBJECTIVES, **kw,
    }  # fmt: skip


def _gathered_info_nce(dp, u, v, extra, items, train, freq):
    """Each rank: its rows of the global batch, the batch's positives gathered as negatives;
    the weighted loss and gradients summed over ranks."""
    n = u.shape[0]
    lo, hi = dp.bounds(n)
    u, v = u.clone().requires_grad_(), v.clone().requires_grad_()
    cands = torch.cat([dp.gather_rows(v[lo:hi], n), extra])  # (n + S, D)
    labels = np.arange(lo, hi)
    mask = accidental_hit_mask(train, np.arange(lo, hi), items, labels)
    log_q = log_expected_counts(torch.as_tensor(items), n, len(extra), freq, None)
    loss = info_nce(
        -(u[lo:hi] @ cands.T), torch.as_tensor(labels), mask=torch.as_tensor(mask), log_q=log_q
    )
    ((hi - lo) / n * loss).backward()
    grads = {"u": u.grad, "v": v.grad}
    dp.all_reduce(grads, weight=1.0)  # the weights are in the loss already
    (total,) = dp.sum((hi - lo) / n * float(loss.detach()))
    return total, grads


def _info_nce_inputs() -> tuple:
    g = torch.Generator().manual_seed(0)
    n, d = 7, 4  # uneven: 4 + 3 rows
    train = _matrix(12, 9, 5)
    u, v, extra = (torch.randn(k, d, generator=g) for k in (n, n, 3))
    pos = np.array([train[i].indices[0] for i in range(n)])  # each anchor's positive
    items = np.concatenate([pos, [0, 4, 8]])  # the candidates' items: positives, then sampled
    return u, v, extra, items, train, torch.full((9,), 1 / 9, dtype=torch.float64)


def _cases(tmp: Path) -> dict:
    """What the 2 ranks run: name -> (fn, args)."""
    cases = {}
    for persistent in (False, True):
        # 41 users in batches of 8: the last global batch is 1 row, so rank 1 gets none; PCD's
        # chains split as the batches do when the batches are full (40 users)
        train, valid = _split(40 if persistent else 41, 30, 0)
        cfg = _rbm_config(persistent=persistent, cd_k=1)
        if not persistent:  # early stopping: validation peaks at epoch 4 (of 8) here
            cfg = cfg.replace(epochs=8, patience=1)
        cases[f"rbm-{persistent}"] = (_fit_rbm, (cfg, train, valid))
    if "objective" in RBMConfig.__dataclass_fields__:  # conditional NLL (Adam) + CD-1, 41 users
        train, valid = _split(41, 30, 0)
        cases["rbm-hybrid"] = (_fit_rbm, (_rbm_config(objective="hybrid"), train, valid))
    cfg = _rbm_config(persistent=True, epochs=2, checkpoint_dir=str(tmp / "rbm-ckpt"))
    cases["rbm-ckpt"] = (_fit_rbm, (cfg, _matrix(40, 30, 2), None))  # stops after 2 of 4
    train, valid = _split(30, 25, 3)
    cases["retriever"] = (_fit_retriever, (_retriever_kw(), train, valid))
    if _OBJECTIVES:  # the user-level objective: 7 users a batch, the last one 2 (1 + 1)
        kw = _retriever_kw(objective="user", softmax="sampled", batch_size=7)
        cases["retriever-user"] = (_fit_retriever, (kw, train, valid))
    # the ranks resume a 1-process checkpoint of epoch 1 (written by the fixture) to epoch 3
    kw = _retriever_kw(epochs=3, checkpoint_dir=str(tmp / "retriever-ckpt"))
    cases["retriever-resume"] = (_fit_retriever, (kw, train, None))
    cases["info_nce"] = (_gathered_info_nce, _info_nce_inputs())
    # the softmax RBM (item orientation: 25 item cases in batches of 7, the last one 4 = 2 + 2;
    # the user orientation: 30 user cases, 29 + 1: rank 1 gets no row of the last batch)
    train, valid = _ratings(30, 25, 4)
    for name, kw in (
        ("softmax-cd", _softmax_kw(cd_k=1)),
        ("softmax-pcd", _softmax_kw(persistent=True, cd_k=2)),
        ("softmax-user", _softmax_kw(orientation="user", batch_size=29)),
    ):
        cases[name] = (_fit_softmax, (kw, train, valid))
    kw = _softmax_kw(persistent=True, epochs=2, checkpoint_dir=str(tmp / "softmax-ckpt"))
    cases["softmax-ckpt"] = (_fit_softmax, (kw, train, None))  # stops after 2 of 4
    return cases


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Both ranks' results of every case: one spawn for the module."""
    tmp = tmp_path_factory.mktemp("ddp")
    cases = {name: args for name, (_, args) in _cases(tmp).items()}
    kw, train, _ = cases["retriever-resume"]
    _fit_retriever(None, {**kw, "epochs": 1}, train, None)  # the checkpoint the ranks resume
    results = _spawn([(name, fn, args) for name, (fn, args) in _cases(tmp).items()], tmp)
    return cases, results


@pytest.mark.parametrize(
    "name", ["rbm-False", "rbm-True", "rbm-hybrid"], ids=["cd1", "pcd1", "hybrid"]
)
def test_rbm_two_ranks_equal_one_process(ranks, name):
    cases, (r0, r1) = ranks
    if name not in cases:
        pytest.skip("this RBMConfig has no objective field")
    cfg, train, valid = cases[name]
    ref, ref_hist = _fit_rbm(None, cfg, train, valid)
    (p0, h0), (p1, h1) = r0[name], r1[name]
    _assert_params_equal(p0, ref)
    _assert_params_equal(p1, p0)
    # both ranks stopped where one process stops (rank 0 decided; early for CD-1)
    assert len(h0) == len(h1) == len(ref_hist) <= cfg.epochs
    assert name != "rbm-False" or len(h0) < cfg.epochs
    # rank 0 validated; its score and the summed reconstruction error are the 1-process ones
    loss = "conditional_nll" if name == "rbm-hybrid" else "reconstruction_error"
    for a, b in zip(h0, ref_hist, strict=True):
        assert ("valid_ndcg@10" in a) == ("valid_ndcg@10" in b)  # validated the same epochs
        if "valid_ndcg@10" in b:
            assert a["valid_ndcg@10"] == pytest.approx(b["valid_ndcg@10"], abs=1e-6)
        assert a[loss] == pytest.approx(b[loss], rel=1e-5)


def test_rbm_checkpoint_from_two_ranks_resumes_in_one(ranks):
    cases, (r0, _) = ranks
    cfg, train, _ = cases["rbm-ckpt"]
    assert [h["epoch"] for h in r0["rbm-ckpt"][1]] == [0, 1]
    resumed, hist = _fit_rbm(None, cfg.replace(epochs=4), train, None)
    straight, _ = _fit_rbm(None, cfg.replace(epochs=4, checkpoint_dir=""), train, None)
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    _assert_params_equal(resumed, straight)


@pytest.mark.parametrize("name", ["retriever", "retriever-user"])
def test_retriever_two_ranks_equal_one_process(ranks, name):
    cases, (r0, r1) = ranks
    if name not in cases:
        pytest.skip("this RetrieverConfig has no user-level objective")
    kw, train, valid = cases[name]
    ref, ref_info = _fit_retriever(None, kw, train, valid)
    (p0, info0), (p1, _) = r0[name], r1[name]
    _assert_params_equal(p0, ref)
    _assert_params_equal(p1, p0)
    for a, b in zip(info0["history"], ref_info["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert ("valid_ndcg@10" in a) == ("valid_ndcg@10" in b)  # validated the same epochs
        if "valid_ndcg@10" in b:
            assert a["valid_ndcg@10"] == pytest.approx(b["valid_ndcg@10"], abs=1e-6)


def test_retriever_checkpoint_from_one_process_resumes_on_two_ranks(ranks):
    cases, (r0, r1) = ranks
    kw, train, _ = cases["retriever-resume"]
    straight, _ = _fit_retriever(None, {**kw, "checkpoint_dir": ""}, train, None)
    (p0, info0), (p1, _) = r0["retriever-resume"], r1["retriever-resume"]
    assert [h["epoch"] for h in info0["history"]] == [0, 1, 2]
    _assert_params_equal(p0, straight)
    _assert_params_equal(p1, p0)


def test_gathered_info_nce_equals_the_single_process_loss(ranks):
    u, v, extra, items, train, freq = _info_nce_inputs()
    _, (r0, r1) = ranks
    (t0, g0), (t1, _) = r0["info_nce"], r1["info_nce"]
    # one process, the whole batch
    n = u.shape[0]
    u1, v1 = u.clone().requires_grad_(), v.clone().requires_grad_()
    mask = accidental_hit_mask(train, np.arange(n), items, np.arange(n))
    log_q = log_expected_counts(torch.as_tensor(items), n, len(extra), freq, None)
    energies = -(u1 @ torch.cat([v1, extra]).T)
    loss = info_nce(energies, torch.arange(n), mask=torch.as_tensor(mask), log_q=log_q)
    loss.backward()
    assert mask.any()  # the masking is exercised
    assert t0 == pytest.approx(float(loss.detach()), rel=1e-6) and t1 == pytest.approx(t0)
    torch.testing.assert_close(g0["u"], u1.grad, **TOL)
    torch.testing.assert_close(g0["v"], v1.grad, **TOL)


@pytest.mark.parametrize("name", ["softmax-cd", "softmax-pcd", "softmax-user"])
def test_softmax_rbm_two_ranks_equal_one_process(ranks, name):
    cases, (r0, r1) = ranks
    kw, train, valid = cases[name]
    ref, ref_hist = _fit_softmax(None, kw, train, valid)
    (p0, h0), (p1, _) = r0[name], r1[name]
    _assert_params_equal(p0, ref)
    _assert_params_equal(p1, p0)
    assert len(h0) == len(ref_hist) == kw["epochs"]
    for a, b in zip(h0, ref_hist, strict=True):  # rank 0 validated; the summed recon error
        assert a["valid_rmse"] == pytest.approx(b["valid_rmse"], abs=1e-6)
        assert a["reconstruction_rmse"] == pytest.approx(b["reconstruction_rmse"], rel=1e-5)


def test_softmax_rbm_pcd_checkpoint_from_two_ranks_resumes_in_one(ranks):
    cases, (r0, _) = ranks
    kw, train, _ = cases["softmax-ckpt"]
    assert [h["epoch"] for h in r0["softmax-ckpt"][1]] == [0, 1]
    resumed, hist = _fit_softmax(None, {**kw, "epochs": 4}, train, None)
    straight, _ = _fit_softmax(None, {**kw, "epochs": 4, "checkpoint_dir": ""}, train, None)
    assert [h["epoch"] for h in hist] == [0, 1, 2, 3]
    _assert_params_equal(resumed, straight)


def test_torchrun_train_logs_one_run_and_writes_one_model(tmp_path, sqlite_store):
    import mlflow

    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.data.synthetic import planted_communities

    log = planted_communities(n_users=60, n_items=30, n_interactions=900, seed=1)
    log.drop("community").write_parquet(tmp_path / "log.parquet")
    prepare_dataset(tmp_path / "log.parquet").save(tmp_path / "data")
    uri, experiment = sqlite_store, f"ddp-{tmp_path.name}"  # the session's store (tables made)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(
        # python -m torch.distributed.run is torchrun (whether or not it is on PATH)
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_port", str(_port()), "-m", "recsys_ebm",
         "train", "--data", "data", "--model", "rbm", "--distributed", "--out", "model",
         "--set", "epochs=2", "--set", "n_hidden=8", "--set", "device=cpu",
         "--set", "progress=false",
         "--tracking-uri", uri, "--experiment", experiment],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "model").is_dir()
    # the one model directory (the store and its artifacts live elsewhere)
    made = {p.name for p in tmp_path.iterdir()} - {"mlruns"}
    assert made == {"data", "log.parquet", "model"}, made
    assert r.stdout.count("-> model") == 1 and "rank 1: trained rbm" in r.stdout, r.stdout
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["distributed.world_size"] == "2"
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "fit_seconds")) == 1
    steps = mlflow.MlflowClient().get_metric_history(run.info.run_id, "learning_rate")
    assert [m.step for m in steps] == [0, 1]  # one callback per epoch, from rank 0 only
