"""The shared training loop (recsys_ebm.models.training) on a tiny task, and the capability
Protocols (recsys_ebm.models.capabilities) against every registered model class."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from recsys_ebm.diagnostics import DivergenceError
from recsys_ebm.io import load_checkpoint, save_checkpoint
from recsys_ebm.models import MODEL_PATHS, get_model_class
from recsys_ebm.models.capabilities import (
    CandidateRetriever,
    Composite,
    FreeEnergyModel,
    HistoryHolder,
    RatingPredictor,
    Trainable,
)
from recsys_ebm.models.training import run_training


class Noisy:
    """A one-parameter Trainable: each epoch pulls ``w`` halfway to 1 plus seeded noise, so a
    resumed run matches an uninterrupted one only if the generator state travels too."""

    def __init__(self, seed: int = 0, blow_up_at: int | None = None) -> None:
        self.w = torch.zeros(3)
        self.gen = torch.Generator().manual_seed(seed)
        self.blow_up_at = blow_up_at
        self.epochs_trained: list[int] = []

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.epochs_trained.append(epoch)
        noise = torch.randn(3, generator=self.gen) * 0.1
        self.w = self.w + 0.5 * (1.0 - self.w) + noise
        if epoch == self.blow_up_at:
            self.w = self.w * float("nan")
        return {"loss": float(((self.w - 1.0) ** 2).sum())}

    def state_dict(self) -> dict[str, Any]:
        return {"w": self.w.clone(), "gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w, _ = state["w"].clone(), self.gen.set_state(state["gen"])

    def snapshot(self) -> dict[str, Any]:
        return {"w": self.w.clone()}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.w = snapshot["w"].clone()

    def parameters_to_check(self) -> dict[str, Any]:
        return {"w": self.w}


def scripted(scores: list[float]):
    """A monitor returning the given scores in turn."""
    it = iter(scores)
    return lambda: next(it)


def test_noisy_is_a_trainable():
    assert isinstance(Noisy(), Trainable)
    assert not isinstance(object(), Trainable)


def test_early_stopping_restores_the_best_epoch_and_reports_it():
    task = Noisy()
    seen = {}

    def snap(epoch, metrics):
        seen[epoch] = (task.w.clone(), metrics)

    res = run_training(
        task,
        epochs=10,
        fingerprint="f",
        monitor=scripted([0.1, 0.5, 0.4, 0.3, 0.9]),
        monitor_name="valid_ndcg@10",
        patience=2,
        callback=snap,
    )
    assert res.stopped_early and res.epochs_run == 4 and task.epochs_trained == [0, 1, 2, 3]
    assert res.best_epoch == 1 and res.best_score == 0.5
    assert torch.equal(task.w, seen[1][0])  # the best epoch's parameters are back
    # one callback per epoch, with that epoch's figures (the score included, not the epoch)
    assert sorted(seen) == [0, 1, 2, 3]
    assert seen[2][1] == {"loss": seen[2][1]["loss"], "valid_ndcg@10": 0.4}
    assert [h["epoch"] for h in res.history] == [0, 1, 2, 3]


def test_validate_every_scores_some_epochs_and_counts_patience_in_epochs():
    """validate_every=3: the monitor runs after epochs 2, 5, 8, 11; the best epoch is a
    validated one; patience counts epochs (2 validations without a gain = 6 epochs >= patience
    5 stop the run after epoch 11)."""
    task = Noisy()
    calls = []

    def monitor() -> float:
        calls.append(len(task.epochs_trained) - 1)
        return [0.2, 0.7, 0.5, 0.6][len(calls) - 1]

    ws = {}
    res = run_training(
        task, epochs=20, fingerprint="f", monitor=monitor, monitor_name="valid_ndcg@10",
        patience=5, validate_every=3, callback=lambda e, m: ws.update({e: task.w.clone()}),
    )  # fmt: skip
    assert calls == [2, 5, 8, 11] and res.stopped_early and res.epochs_run == 12
    assert res.best_epoch == 5 and res.best_score == 0.7
    assert torch.equal(task.w, ws[5]) and task.epochs_trained == list(range(12))
    assert [h["epoch"] for h in res.history if "valid_ndcg@10" in h] == [2, 5, 8, 11]
    # without early stopping the last epoch is validated too
    calls.clear()
    res = run_training(
        Noisy(), epochs=4, fingerprint="f", monitor=lambda: calls.append(1) or 0.1,
        validate_every=3,
    )  # fmt: skip
    assert len(calls) == 2 and [h["epoch"] for h in res.history if "valid_score" in h] == [2, 3]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="validate_every"):
            run_training(Noisy(), epochs=2, fingerprint="f", validate_every=bad)


def test_minimising_monitor_and_no_monitor():
    res = run_training(
        Noisy(), epochs=5, fingerprint="f", monitor=scripted([3, 2, 2.5, 2.6, 1]),
        maximize=False, patience=2, monitor_name="valid_rmse",
    )  # fmt: skip
    assert res.best_epoch == 1 and res.epochs_run == 4
    task = Noisy()
    res = run_training(task, epochs=3, fingerprint="f", patience=1)
    # without a monitor nothing stops early and the last epoch's parameters stay
    assert res.epochs_run == 3 and res.best_epoch is None and not res.stopped_early
    assert task.epochs_trained == [0, 1, 2]


class Stop(Exception):
    pass


def test_resume_from_a_checkpoint_matches_an_uninterrupted_run(tmp_path):
    full = Noisy()
    ref = run_training(full, epochs=6, fingerprint="f", monitor=lambda: float(full.w.sum()))

    def stop_at_2(epoch, metrics):
        # the callback runs after the epoch's checkpoint is written
        assert load_checkpoint(tmp_path)["epoch"] == epoch
        if epoch == 2:
            raise Stop

    first = Noisy()
    with pytest.raises(Stop):
        run_training(
            first, epochs=6, fingerprint="f", monitor=lambda: float(first.w.sum()),
            checkpoint_dir=tmp_path, callback=stop_at_2,
        )  # fmt: skip
    again = Noisy()
    res = run_training(
        again, epochs=6, fingerprint="f", monitor=lambda: float(again.w.sum()),
        checkpoint_dir=tmp_path,
    )  # fmt: skip
    assert again.epochs_trained == [3, 4, 5]  # continued after the checkpoint's epoch
    assert torch.equal(again.w, full.w)
    assert res.history == ref.history and res.best_epoch == ref.best_epoch
    # another config or matrix: refused by name, not silently resumed
    with pytest.raises(ValueError, match="checkpoint_dir: .* another config"):
        run_training(Noisy(), epochs=6, fingerprint="other", checkpoint_dir=tmp_path)


def test_checkpoints_of_the_earlier_rbm_layout_resume_their_best_epoch(tmp_path):
    """Before the shared loop the RBMs stored the best parameters as ``best_<name>``."""
    task = Noisy()
    best_w = torch.full((3,), 0.25)
    legacy = {
        **task.state_dict(),
        "best_w": best_w,
        "history": [{"epoch": 0, "loss": 1.0, "valid_ndcg@10": 0.9}],
        "epoch": 0,
        "bad": 0,
        "best_score": 0.9,
        "best_epoch": 0,
        "fingerprint": "f",
    }
    save_checkpoint(tmp_path, legacy)
    res = run_training(
        task, epochs=3, fingerprint="f", monitor=scripted([0.1, 0.2]),
        monitor_name="valid_ndcg@10", checkpoint_dir=tmp_path,
    )  # fmt: skip
    assert res.best_epoch == 0 and res.best_score == 0.9 and res.epochs_run == 3
    assert torch.equal(task.w, best_w)


def test_divergence_is_caught_after_the_epoch_and_nothing_is_saved(tmp_path):
    task = Noisy(blow_up_at=1)
    calls = []
    with pytest.raises(DivergenceError, match=r"Tiny diverged at epoch 2: w has NaN/inf values"):
        run_training(
            task, epochs=4, fingerprint="f", who="Tiny", checkpoint_dir=tmp_path,
            callback=lambda e, m: calls.append(e),
        )  # fmt: skip
    assert calls == [0]  # the diverged epoch reached neither the callback
    assert load_checkpoint(tmp_path)["epoch"] == 0  # nor the checkpoint
    big = Noisy()
    with pytest.raises(DivergenceError, match=r"max \|w\| = .*max_abs_param=0.01"):
        run_training(big, epochs=2, fingerprint="f", who="Tiny", max_abs_param=0.01)


# ---------------------------------------------------------------------------- capabilities
def _instance(name: str, **kw: Any) -> Any:
    return get_model_class(name)(**kw)


#: (registry name, config overrides) -> the capabilities it must have, and only those
EXPECTED = {
    ("popularity", ()): set(),
    ("ease", ()): set(),
    ("als", ()): set(),
    ("bpr", ()): set(),
    ("rbm", ()): {FreeEnergyModel},
    ("softmax-rbm", (("orientation", "user"),)): {FreeEnergyModel, RatingPredictor},
    ("softmax-rbm", (("orientation", "item"),)): {RatingPredictor},
    ("retriever", ()): {CandidateRetriever},
    ("ranker", ()): {HistoryHolder, Composite},
}
PROTOCOLS = (FreeEnergyModel, CandidateRetriever, RatingPredictor, HistoryHolder, Composite)


def test_every_registered_model_is_covered():
    assert {name for name, _ in EXPECTED} == set(MODEL_PATHS)


@pytest.mark.parametrize(("key", "expected"), list(EXPECTED.items()), ids=str)
def test_protocols_match_exactly_the_models_that_have_them(key, expected):
    name, overrides = key
    model = _instance(name, **dict(overrides))
    have = {p for p in PROTOCOLS if isinstance(model, p)}
    assert have == expected, type(model).__name__
    assert not isinstance(model, Trainable)  # the training tasks are, the models are not


def test_baselines_are_a_class_attribute():
    from recsys_ebm.evaluation.evaluate import BASELINES
    from recsys_ebm.models import baseline_names

    assert baseline_names() == BASELINES == ("popularity", "ease", "als", "bpr")
    assert not any(get_model_class(n).is_baseline for n in ("rbm", "retriever", "ranker"))


def test_best_baseline_comes_from_is_baseline_not_the_name(tmp_path):
    """A baseline evaluated under any name is the reference; a non-baseline never is."""
    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.data.synthetic import planted_communities
    from recsys_ebm.evaluation.evaluate import evaluate_models

    log = planted_communities(n_users=150, n_items=60, n_interactions=3000, seed=2)
    log.drop("community").write_parquet(tmp_path / "log.parquet")
    ds = prepare_dataset(tmp_path / "log.parquet", split="random", test_fraction=0.2, seed=0)
    pop = get_model_class("popularity")().fit(ds.train)
    ease = get_model_class("ease")(l2=50.0, l2_grid=(), progress=False).fit(ds.train)
    rbm = get_model_class("rbm")(n_hidden=8, epochs=2, progress=False).fit(ds.train)
    res = evaluate_models(
        ds, {"my-pop": pop, "my-ease": ease, "rbm": rbm}, ks=(5,), n_boot=10, progress=False
    )
    assert {m.name: m.baseline for m in res.models} == {
        "my-pop": True,
        "my-ease": True,
        "rbm": False,
    }
    means = {m.name: m.means["ndcg@5"] for m in res.models}
    assert res.best_baseline == max(("my-pop", "my-ease"), key=means.get)
    assert set(res.significance) == {"my-pop", "my-ease", "rbm"} - {res.best_baseline}


def test_average_validates_keeps_and_resumes_the_average_of_the_iterates(tmp_path):
    """average=a: the raw iterates are those of a run without it; the monitor, the best epoch
    and (without a monitor) the final model are their average over epochs with decays
    d_t = min(a, (t - 1) / (t + 1)) (linear weights first, then the exponential average); a
    checkpoint carries the average, so a resumed run ends where an uninterrupted one does."""
    n, a = 8, 0.75
    plain, raws = Noisy(), []
    run_training(plain, epochs=n, fingerprint="f", callback=lambda e, m: raws.append(plain.w))
    decays = [min(a, e / (e + 2)) for e in range(n)]
    assert decays[:3] == [0.0, 1 / 3, 0.5] and decays[-2:] == [a, a]  # both regimes
    avgs = [raws[0]]
    for d, w in zip(decays[1:], raws[1:], strict=True):
        avgs.append(d * avgs[-1] + (1 - d) * w)

    task, seen, during = Noisy(), [], []
    scores = [0.1, 0.2, 0.3, 0.4, 0.5, 0.9, 0.6, 0.7]
    res = run_training(
        task, epochs=n, fingerprint="f", average=a,
        monitor=lambda: seen.append(task.w.clone()) or scores[len(seen) - 1],
        callback=lambda e, m: during.append(task.w.clone()),
    )  # fmt: skip
    for got, want in zip(seen, avgs, strict=True):  # validated: the average
        torch.testing.assert_close(got, want)
    for got, want in zip(during, raws, strict=True):  # trained on: the raw iterates
        torch.testing.assert_close(got, want)
    assert res.best_epoch == 5
    torch.testing.assert_close(task.w, avgs[5])  # the best epoch's average is kept
    last = Noisy()
    run_training(last, epochs=n, fingerprint="f", average=a)  # no monitor: the last average
    torch.testing.assert_close(last.w, avgs[-1])

    def stop_at_3(epoch, metrics):
        if epoch == 3:
            raise Stop

    with pytest.raises(Stop):
        run_training(
            Noisy(), epochs=n, fingerprint="f", average=a, checkpoint_dir=tmp_path,
            callback=stop_at_3,
        )  # fmt: skip
    again = Noisy()
    run_training(again, epochs=n, fingerprint="f", average=a, checkpoint_dir=tmp_path)
    assert again.epochs_trained == [4, 5, 6, 7]
    torch.testing.assert_close(again.w, last.w, rtol=0, atol=0)
    for bad in (-0.5, 1.0, True, "0.5"):
        with pytest.raises(ValueError, match="average: expected a decay in"):
            run_training(Noisy(), epochs=1, fingerprint="f", average=bad)
