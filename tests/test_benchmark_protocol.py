"""The quality benchmark's validation replica (``benchmarks/quality.py --on-valid``) never reads
test: its splits are the outer train, split again, and the outer validation split."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.data.synthetic import planted_communities

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality():
    spec = importlib.util.spec_from_file_location("quality_bench", ROOT / "benchmarks/quality.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["quality_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


def _pairs(m) -> set[tuple[int, int]]:
    c = m.tocoo()
    return set(zip(c.row.tolist(), c.col.tolist(), strict=True))


def test_replica_is_the_outer_train_split_again_and_the_outer_valid(quality, tmp_path):
    log = planted_communities(n_users=120, n_items=60, n_interactions=4_000, seed=2)
    log.drop("community").write_parquet(tmp_path / "log.parquet")
    ds = prepare_dataset(tmp_path / "log.parquet", **quality.SPLIT)
    rep = quality.validation_replica(ds)

    train, valid, test = _pairs(rep.train), _pairs(rep.valid), _pairs(rep.test)
    assert train.isdisjoint(valid)
    assert train | valid == _pairs(ds.train)  # the outer train, split again
    assert test == _pairs(ds.valid)  # the outer validation split plays test
    assert not (train | valid | test) & _pairs(ds.test)  # outer test: nowhere
    assert _pairs(rep.history("test")) == _pairs(ds.train)

    # 1/8 of each user's training pairs held out (rounded), every user keeps training pairs
    n_train, n_valid = rep.train.getnnz(axis=1), rep.valid.getnnz(axis=1)
    outer = ds.train.getnnz(axis=1)
    np.testing.assert_array_equal(n_valid, np.minimum(np.floor(outer / 8 + 0.5), outer - 1))
    assert (n_train[outer > 0] >= 1).all()
    # seeded: the same replica twice, another one for another seed
    assert _pairs(quality.validation_replica(ds).valid) == valid
    assert _pairs(quality.validation_replica(ds, seed=1).valid) != valid


def test_product_of_experts_of_two_rbms_is_one_rbm_with_both_hidden_layers():
    """benchmarks/rbm_average.py --poe: the PoE's free energy is the sum of the two RBMs', so its
    energies (dF) are the sums of theirs."""
    import torch

    from recsys_ebm.data.synthetic import checkerboard
    from recsys_ebm.models.rbm import RBM

    spec = importlib.util.spec_from_file_location("rbm_average", ROOT / "benchmarks/rbm_average.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    board = checkerboard(seed=0)
    kw = dict(n_hidden=8, epochs=2, batch_size=16, progress=False, device="cpu")
    x, y = RBM(seed=0, **kw).fit(board.train), RBM(seed=1, **{**kw, "n_hidden": 5}).fit(board.train)
    poe = mod.product_of_experts(x, y)
    assert poe.parameters()["W"].shape == (board.train.shape[1], 13)
    assert poe.config.n_hidden == 13
    np.testing.assert_allclose(
        poe.free_energy(board.train),
        x.free_energy(board.train) + y.free_energy(board.train),
        rtol=1e-5,
        atol=1e-4,
    )
    hist = board.train[:7]
    torch.testing.assert_close(
        torch.as_tensor(poe.energies(hist)),
        torch.as_tensor(x.energies(hist) + y.energies(hist)),
        rtol=1e-5,
        atol=1e-4,
    )
    assert not np.allclose(x.energies(hist), y.energies(hist))  # two different experts


@pytest.fixture(scope="module")
def segments(quality):
    spec = importlib.util.spec_from_file_location("segments_bench", ROOT / "benchmarks/segments.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_segment_table_splits_users_by_history_quartile(segments):
    lengths = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
    ease = np.linspace(0.1, 0.4, 12)
    other = np.r_[ease[:6] * 2.0, ease[6:] * 0.5]  # twice EASE on short histories, half on long
    rows = segments.segment_table(lengths, {"ease": ease, "rbm": other})
    assert [r["history"] for r in rows] == ["1-4", "4-6", "6-9", "9-12", "all"]
    assert [r["users"] for r in rows] == [3, 3, 3, 3, 12]  # each user in exactly one quartile
    assert rows[0]["rbm/ease"] == pytest.approx(2.0)
    assert rows[3]["rbm/ease"] == pytest.approx(0.5)
    assert rows[0]["ease"] == pytest.approx(ease[:3].mean())
    assert rows[-1]["rbm"] == pytest.approx(other.mean())


def test_segments_run_scores_the_replica_and_matches_the_protocol(
    segments, quality, tmp_path, capsys
):
    import argparse

    from recsys_ebm.evaluation.protocol import evaluate_ranking

    log = planted_communities(n_users=120, n_items=60, n_interactions=4_000, seed=2)
    path = tmp_path / "log.parquet"
    log.drop("community").write_parquet(path)
    args = argparse.Namespace(threads=1, device="cpu", models="rbm", seeds="0,1", set="{}")
    segments.check_args(argparse.ArgumentParser(), args)  # parses --seeds and --set, as main
    rows = segments.run("planted", path, args)
    assert sum(r["users"] for r in rows[:4]) == rows[-1]["users"] > 0
    assert 0.0 < rows[-1]["rbm"] <= 1.0 and 0.0 < rows[-1]["ease"] <= 1.0
    out = capsys.readouterr().out
    assert "rbm/EASE" in out and "validation replica" in out

    # --models dlae (a baseline, no seeds) and --set (an EBM's overrides): 8 hidden units
    args = argparse.Namespace(
        threads=1, device="cpu", models="dlae,rbm", seeds="0", set='{"rbm": {"n_hidden": 8}}'
    )
    segments.check_args(argparse.ArgumentParser(), args)
    rows = segments.run("planted", path, args)
    assert {"ease", "dlae", "rbm", "dlae/ease", "rbm/ease"} <= set(rows[-1])
    assert rows[-1]["dlae"] != rows[-1]["ease"]  # input dropout changes EASE's closed form

    # the "all" row is the protocol's own figure: the same users, the same fits (deterministic)
    ds, hist, ease, _, ease_ndcg = quality.replica_with_ease(path, 1)
    assert rows[-1]["ease"] == pytest.approx(ease_ndcg)
    rbm = quality.early_stop_refit("rbm", ds, "cpu", 1, {"n_hidden": 8, "seed": 0})[0]
    assert rows[-1]["rbm"] == pytest.approx(evaluate_ranking(rbm, hist, ds.test)["ndcg@10"])


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--set", "{bad"], "--set"),
        (["--set", '{"rbm": 3}'], "--set"),
        (["--set", '{"retriever": {"epochs": 2}}', "--models", "rbm"], "--set"),
        (["--set", '{"rbm": {"nope": 1}}'], "nope"),
        (["--models", "rbm,foo"], "foo"),
        (["--seeds", "0,x"], "--seeds"),
    ],
)
def test_segments_bad_arguments_exit_2_naming_them_before_reading_data(
    segments, capsys, argv, named
):
    with pytest.raises(SystemExit) as e:
        segments.main(["--datasets", "ml-100k", "--ml100k", "/nonexistent", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--ranker-set", "{bad"], "--ranker-set: expected a JSON object"),
        (["--ranker-set", "[1]"], "--ranker-set: expected a JSON object"),
        (["--ranker-set", '{"nope": 1}'], "unknown key(s) ['nope']"),
        (["--ranker-set", '{"component_config": 3}'], "component_config: expected an object"),
        (["--also-ranker", "{}"], "--also-ranker: expected a JSON list"),
        (["--also-ranker", "[3]"], "--also-ranker: expected a JSON list of objects"),
        (["--also-ranker", '[{}, {"segments": 0}]'], "--also-ranker (entry 2): RankerConfig.segm"),
        (["--seeds", "0,x"], "--seeds: expected comma-separated integers"),
        (["--seeds", "0,0"], "--seeds: expected distinct seeds"),
        (["--seeds", "0,1", "--ranker", "fit"], "--seeds: expected --ranker reuse"),
    ],
)
def test_quality_bad_arguments_exit_2_before_any_fit(quality, capsys, argv, named):
    """A typo in --ranker-set / --also-ranker is reported before the data is read, not after
    twenty minutes of single-model fits."""
    with pytest.raises(SystemExit) as e:
        quality.main(["--datasets", "ml-100k", "--ml100k", "/nonexistent", *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err


def test_quality_ranker_variants_merge_also_ranker_over_ranker_set(quality):
    import argparse

    args = argparse.Namespace(ranker_set='{"segments": 2}', also_ranker='[{"weight_step": 0.05}]')
    got = quality.ranker_variants(argparse.ArgumentParser(), args)
    assert got == [{"segments": 2}, {"segments": 2, "weight_step": 0.05}]


def test_quality_seeds_average_each_users_metrics_over_the_seeds(quality, tmp_path, capsys):
    """``--seeds 0,1``: the EBMs and the ranker are fitted once per seed and each user's metric
    is their mean, so the table's figure is the mean of the two single-seed runs' figures (the
    same users; the fits are deterministic given the seed); the baselines are fitted once."""
    import argparse

    log = planted_communities(n_users=80, n_items=40, n_interactions=2_000, seed=3)
    path = tmp_path / "log.parquet"
    log.drop("community").write_parquet(path)
    ds = prepare_dataset(path, **quality.SPLIT)
    args = argparse.Namespace(
        device="cpu",
        threads=1,
        bpr=False,
        softmax_rbm=False,
        components=None,
        ranker="reuse",
        variants=[{}],
    )

    def table(seeds: list[int]) -> dict[str, dict]:
        args.seed_list = seeds
        return {r["model"]: r for r in quality.run_dataset("planted", ds, args)}

    one, two, both = table([0]), table([1]), table([0, 1])
    for name in ("rbm", "retriever", "ranker"):
        for m in ("ndcg@10", "recall@20"):
            assert both[name][m] == pytest.approx((one[name][m] + two[name][m]) / 2), (name, m)
        assert both[name]["seeds"] == [0, 1] and one[name]["seeds"] == [0]
        assert both[name]["ndcg@10_per_seed"] == pytest.approx(
            [one[name]["ndcg@10"], two[name]["ndcg@10"]]
        )
    assert one["rbm"]["ndcg@10"] != two["rbm"]["ndcg@10"]  # the seed reaches the fit
    assert both["ease"]["ndcg@10"] == one["ease"]["ndcg@10"] and both["ease"]["seeds"] is None
    out = capsys.readouterr().out
    assert "rbm (seed 1):" in out and "ranker (seed 1):" in out and "NDCG@10 per seed" in out
