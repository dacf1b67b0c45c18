"""The retriever's user-level objective: the catalogue softmax against brute force, its gradient
against autograd and finite differences, accidental-hit masking, the sampled path with its
inclusion-probability (logQ) correction, the history split, and fixed-epoch refits."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_ebm.data.synthetic import checkerboard
from recsys_ebm.models._retriever_loss import (
    log_inclusion,
    multi_positive_softmax,
    target_softmax_each,
)
from recsys_ebm.models._retriever_objective import (
    _full_each_batch,
    holdout_split,
    sampled_candidates,
)
from recsys_ebm.models._retriever_towers import PairedHistory, TwoTower, sparse_history
from recsys_ebm.models.retriever import Retriever


def brute_force(energies, targets, mask=None, log_q=None, mode="shared"):
    """float64 loops: -mean_b mean_{t in T_b} log p(t | u_b) over b's kept candidates."""
    e = np.asarray(energies, dtype=np.float64)
    losses = []
    for b in range(e.shape[0]):
        tg = [c for c in range(e.shape[1]) if targets[b, c]]
        if not tg:
            continue
        q = np.zeros(e.shape[1]) if log_q is None else np.broadcast_to(log_q, e.shape)[b]
        kept = [c for c in range(e.shape[1]) if mask is None or not mask[b, c] or targets[b, c]]
        w = {c: math.exp(-e[b, c] - q[c]) for c in kept}
        negatives = sum(w[c] for c in kept if c not in tg)
        if mode == "shared":
            terms = [-math.log(w[t] / sum(w.values())) for t in tg]
        else:
            terms = [-math.log(w[t] / (w[t] + negatives)) for t in tg]
        losses.append(np.mean(terms))
    return float(np.mean(losses))


@pytest.fixture
def step():
    rng = np.random.default_rng(0)
    energies = rng.normal(0, 2, size=(5, 11))
    targets = rng.random((5, 11)) < 0.25
    targets[4] = False  # a row without targets does not count
    targets[0, 3] = True
    mask = (rng.random((5, 11)) < 0.3) & ~targets  # the rows' input items
    mask[1, 0] = targets[1, 0] = True  # a target is never removed, even when marked
    log_q = np.log(rng.uniform(0.05, 1.0, size=11))
    return energies, targets, mask, log_q


@pytest.mark.parametrize("mode", ["shared", "each"])
def test_full_softmax_equals_brute_force(step, mode):
    energies, targets, mask, log_q = step
    for m in (None, mask):
        for q in (None, log_q):
            got = multi_positive_softmax(
                torch.tensor(energies, dtype=torch.float32),
                torch.tensor(targets),
                mask=None if m is None else torch.tensor(m),
                log_q=None if q is None else torch.tensor(q),
                mode=mode,
            )
            want = brute_force(energies, targets, m, q, mode)
            assert float(got) == pytest.approx(want, rel=1e-5)


def test_shared_and_each_differ_only_with_several_targets(step):
    energies, targets, mask, _ = step
    e, m = torch.tensor(energies), torch.tensor(mask)
    one = torch.zeros_like(torch.tensor(targets))
    one[torch.arange(5), torch.tensor([3, 0, 5, 7, 9])] = True
    one &= ~m
    a = multi_positive_softmax(e, one, mask=m, mode="shared")
    b = multi_positive_softmax(e, one, mask=m, mode="each")
    assert float(a) == pytest.approx(float(b), rel=1e-6)  # one target: the same softmax
    many = torch.tensor(targets)
    # with several targets "each" removes the other targets from a target's denominator
    assert float(multi_positive_softmax(e, many, mask=m, mode="each")) < float(
        multi_positive_softmax(e, many, mask=m, mode="shared")
    )


@pytest.mark.parametrize("mode", ["shared", "each"])
def test_gradient_in_the_energies_is_the_closed_form(step, mode):
    """dL/dE against autograd, R rows with targets, z = -E over the kept candidates.
    shared: dL/dz_bj = (p_bj - t_bj / |T_b|) / R. each, per target t with r = e^z_t / (e^z_t + N),
    N = sum of the negatives' e^z: dl_t/dz_t = -(1 - r), dl_t/dz_j = (1 - r) e^z_j / N."""
    energies, targets, mask, _ = step
    e = torch.tensor(energies, requires_grad=True)
    t, m = torch.tensor(targets), torch.tensor(mask)
    multi_positive_softmax(e, t, mask=m, mode=mode).backward()
    rows = [b for b in range(5) if targets[b].any()]
    want = np.zeros_like(energies)
    for b in rows:
        kept = ~mask[b] | targets[b]
        z = np.where(kept, -energies[b], -np.inf)
        tg = np.flatnonzero(targets[b])
        if mode == "shared":
            p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
            # dL/dz = p - t/|T|, dz/dE = -1
            want[b] = -(p - targets[b] / len(tg))
        else:
            neg = kept & ~targets[b]
            n = np.exp(z[neg]).sum()
            for tt in tg:
                r = np.exp(z[tt]) / (np.exp(z[tt]) + n)  # p(target vs negatives)
                g = np.zeros(energies.shape[1])
                g[tt] = -(1 - r)
                g[neg] = (1 - r) * np.exp(z[neg]) / n
                want[b] -= g / len(tg)
        want[b] /= len(rows)
    np.testing.assert_allclose(e.grad.numpy(), want, rtol=1e-5, atol=1e-8)  # fp32 logits
    # removed (masked) candidates get no gradient: they are constants of the step
    assert (e.grad.numpy()[mask & ~targets] == 0).all()


def _tiny_net(seed=0, n_items=7, dim=4):
    g = torch.Generator().manual_seed(seed)
    return TwoTower(
        n_items,
        dim,
        5,
        item_features=None,
        warm=torch.ones(n_items, dtype=torch.bool),
        n_users=0,
        pooling="attention",
        tie_embeddings=True,
        similarity="cosine",
        temperature=0.5,
        learn_temperature=False,
        tau_min=0.01,
        tau_max=1.0,
        generator=g,
    )


@pytest.mark.parametrize("mode", ["shared", "each"])
def test_parameter_gradient_against_finite_differences(mode):
    """The whole step (split histories -> user tower -> catalogue softmax) on a tiny model:
    autograd's gradient of every parameter against central differences."""
    net = _tiny_net()
    hist = sp.csr_matrix(np.array([[1, 1, 0, 0, 1, 0, 0], [0, 1, 1, 1, 0, 0, 1]], np.float32))
    inputs, targets = holdout_split(hist, 0.5, torch.Generator().manual_seed(2))
    x = sparse_history(inputs, torch.device("cpu"))
    t = torch.tensor(targets.toarray() > 0)
    m = torch.tensor(inputs.toarray() > 0)

    def loss() -> torch.Tensor:
        u = net.encode(x, None)  # (2, D)
        return multi_positive_softmax(net.energy(u, net.item_vectors()), t, mask=m, mode=mode)

    net.zero_grad()
    loss().backward()
    base = float(loss().detach())
    eps = 3e-3
    checked, kinks = 0, 0
    for name, p in net.named_parameters():
        flat = p.data.view(-1)
        for k in range(0, flat.numel(), max(1, flat.numel() // 6)):
            old = float(flat[k])
            with torch.no_grad():
                flat[k] = old + eps
                up = float(loss())
                flat[k] = old - eps
                down = float(loss())
                flat[k] = old
            # a ReLU of the user tower switching within +-eps: the one-sided slopes disagree and
            # no finite difference measures the gradient there
            fd = (up - down) / (2 * eps)
            if abs((up - base) - (base - down)) / eps > 2e-3 + 0.2 * abs(fd):
                kinks += 1
                continue
            assert float(p.grad.view(-1)[k]) == pytest.approx(fd, rel=0.03, abs=2e-3), (name, k)
            checked += 1
    assert kinks <= 2 and checked >= 30, (kinks, checked)


def test_masked_input_items_leave_the_loss_unchanged(step):
    """An input item (accidental hit) is out of the softmax: moving its energy changes nothing,
    and the loss equals the softmax over the catalogue without it."""
    energies, targets, mask, _ = step
    t, m = torch.tensor(targets), torch.tensor(mask)
    base = float(multi_positive_softmax(torch.tensor(energies), t, mask=m))
    moved = energies.copy()
    moved[mask & ~targets] = -50.0  # the most likely items, were they candidates
    assert float(multi_positive_softmax(torch.tensor(moved), t, mask=m)) == pytest.approx(
        base, rel=1e-9
    )
    unmasked = float(multi_positive_softmax(torch.tensor(moved), t))
    assert unmasked > base + 1.0  # without the mask they would take the probability mass


@pytest.mark.parametrize("mode", ["shared", "each"])
def test_a_row_without_negatives_has_zero_loss_and_finite_gradients(mode):
    """Every candidate of row 0 is a target or an input item: nothing is left to rank against,
    so "each" gives that row loss 0 ("shared" the log of its target count) and no gradient is
    NaN (a removed logit is -1e30, never -inf)."""
    e = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.1, -0.4]], requires_grad=True)
    t = torch.tensor([[True, True, False], [True, False, False]])
    m = torch.tensor([[False, False, True], [False, False, False]])
    row0 = multi_positive_softmax(e[:1], t[:1], mask=m[:1], mode=mode)
    p = torch.softmax(-e.detach()[0, :2].double(), 0)
    want = 0.0 if mode == "each" else float(-torch.log(p).mean())
    assert float(row0.detach()) == pytest.approx(want, abs=1e-6)
    multi_positive_softmax(e, t, mask=m, mode=mode).backward()
    assert torch.isfinite(e.grad).all()
    assert float(e.grad[0, 2]) == 0.0  # the removed input item gets no gradient

def test_each_loss_gradient_is_autograds_of_the_plain_formula():
    """target_softmax_each writes its gradient by hand: it equals torch.autograd.gradcheck's
    numerical Jacobian (float64) and autograd through the plain masked logsumexp, with a row
    whose candidates are all removed and a row without a target among the rows."""
    rng = np.random.default_rng(3)
    z = torch.tensor(rng.normal(0, 2, size=(5, 9)), dtype=torch.float64, requires_grad=True)
    t = torch.tensor(rng.random((5, 9)) < 0.3)
    t[0, 1] = True
    t[3] = False  # no target: out of the mean
    removed = t | torch.tensor(rng.random((5, 9)) < 0.3)
    removed[4] = True  # nothing to rank against: loss 0, gradient 0
    t[4, 2] = True
    rows, cols = t.nonzero(as_tuple=True)
    assert torch.autograd.gradcheck(
        lambda x: target_softmax_each(x, removed, rows, cols), (z,), eps=1e-6, atol=1e-7
    )

    def plain(x: torch.Tensor) -> torch.Tensor:
        log_neg = torch.logsumexp(x.masked_fill(removed, -1e30), dim=1)
        per = torch.nn.functional.softplus(log_neg[rows] - x[rows, cols])
        n_t = t.sum(1)
        nll = torch.zeros(5, dtype=x.dtype).index_add(0, rows, per)
        return (nll[n_t > 0] / n_t[n_t > 0]).mean()

    got = torch.autograd.grad(target_softmax_each(z, removed, rows, cols), z)[0]
    want = torch.autograd.grad(plain(z), z)[0]
    got_loss = float(target_softmax_each(z, removed, rows, cols).detach())
    assert got_loss == pytest.approx(float(plain(z).detach()))
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-12)
    assert float(got[4].abs().sum()) == 0.0


def test_training_batch_pools_as_the_serving_path_with_the_same_gradient():
    """A training batch's inputs come with their transpose (PairedHistory) so the pooling's
    backward needs no sort: the user vectors and every parameter's gradient equal those of the
    plain CSR history (sparse_history) of the same inputs, for a rank's share of the batch too."""
    rng = np.random.default_rng(5)
    dense = (rng.random((9, 7)) < 0.5).astype(np.float32)
    dense[3] = 0  # an empty history
    rows = sp.csr_matrix(dense)
    for lo, hi in ((0, 9), (4, 9)):
        hist, removed, t_rows, t_cols = _full_each_batch(
            rows, lo, hi, 0.5, torch.Generator().manual_seed(1), torch.device("cpu")
        )
        assert isinstance(hist, PairedHistory)
        inputs = rows[lo:hi].toarray() > 0
        inputs[t_rows.numpy(), t_cols.numpy()] = False  # the targets leave the input
        np.testing.assert_array_equal(removed.numpy(), rows[lo:hi].toarray() > 0)
        np.testing.assert_array_equal(hist.rows.to_dense().numpy() > 0, inputs)
        np.testing.assert_array_equal(hist.cols.to_dense().numpy().T > 0, inputs)
        plain = sparse_history(sp.csr_matrix(inputs.astype(np.float32)), torch.device("cpu"))
        grads = []
        for h in (hist, plain):
            net = _tiny_net(seed=1)
            net.pooling = "mean"
            u = net.encode(h, None)
            (u * torch.arange(u.numel()).view_as(u)).sum().backward()
            grads.append((u.detach(), [p.grad for p in net.parameters()]))
        torch.testing.assert_close(grads[0][0], grads[1][0], rtol=0, atol=0)
        assert sum(g is not None for g in grads[0][1]) >= 4  # the id table and the MLP
        for a, b in zip(grads[0][1], grads[1][1], strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_holdout_split_partitions_every_history():
    rng = np.random.default_rng(0)
    rows = sp.random(60, 40, density=0.2, format="lil", random_state=rng, dtype=np.float32)
    rows[5] = 0  # an empty row stays empty
    rows[6] = 0
    rows[6, 3] = 1  # a one-item row: the item is the target, the input is empty
    rows = rows.tocsr()
    rows.eliminate_zeros()
    rows.data[:] = 1.0
    inputs, targets = holdout_split(rows, 0.3, torch.Generator().manual_seed(0))
    assert (inputs + targets != rows).nnz == 0  # a partition of each row
    assert inputs.multiply(targets).nnz == 0
    has = rows.getnnz(axis=1) > 0
    assert (targets.getnnz(axis=1)[has] >= 1).all() and targets[5].nnz == 0
    assert targets[6].indices.tolist() == [3] and inputs[6].nnz == 0
    assert 0.25 < targets.nnz / rows.nnz < 0.42  # ~0.3, plus the one-per-row minimum
    again, _ = holdout_split(rows, 0.3, torch.Generator().manual_seed(0))
    assert (again != inputs).nnz == 0  # seeded
    other, _ = holdout_split(rows, 0.3, torch.Generator().manual_seed(1))
    assert (other != inputs).nnz > 0


def test_log_inclusion_is_the_probability_of_being_drawn():
    freq = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    got = log_inclusion(torch.arange(4), 3, 2, freq, probs).double().exp()
    want = 1 - (1 - freq) ** 3 * (1 - probs) ** 2
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
    # Monte Carlo: the share of steps in which item j is a candidate
    drawn = _draws(freq, 3, probs, 2, 4000)  # (4000, 4) bool
    np.testing.assert_allclose(drawn.double().mean(0).numpy(), want.numpy(), atol=0.03)


def _draws(freq, n_in_batch, probs, n_sampled, steps, seed=0):
    """(steps, I) bool: the items in each step's de-duplicated candidate set."""
    g = torch.Generator().manual_seed(seed)
    n = len(freq)
    a = torch.multinomial(freq.expand(steps, n), n_in_batch, True, generator=g)
    b = torch.multinomial(probs.expand(steps, n), n_sampled, True, generator=g)
    out = torch.zeros(steps, n, dtype=torch.bool)
    return out.scatter_(1, torch.cat([a, b], 1), True)


def test_sampled_denominator_estimates_the_catalogue_partition_function():
    """Horvitz-Thompson: E[sum_{j in S} exp(z_j) / pi_j] = sum_j exp(z_j), the catalogue's
    partition function, when S holds each item with probability pi_j."""
    rng = np.random.default_rng(4)
    n = 30
    z = torch.tensor(rng.normal(0, 1.5, n))
    freq = torch.tensor(rng.dirichlet(np.ones(n)))
    probs = torch.full((n,), 1.0 / n, dtype=torch.float64)
    log_pi = log_inclusion(torch.arange(n), 6, 8, freq, probs).double()
    s = _draws(freq, 6, probs, 8, 20_000, seed=1).double()  # (steps, I)
    est = (s * torch.exp(z - log_pi)).sum(1)  # (steps,) the corrected sampled sums
    assert float(est.mean()) == pytest.approx(float(torch.exp(z).sum()), rel=0.02)
    # uncorrected, the sampled sum underestimates it badly
    assert float(torch.exp(z).sum()) > 1.5 * float((s * torch.exp(z)).sum(1).mean())


def test_sampled_candidates_rows_and_masks():
    inputs = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 1], [0, 0, 1, 0, 0, 0]], np.float32))
    targets = sp.csr_matrix(np.array([[0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0]], np.float32))
    cands, t, m, log_q = sampled_candidates(
        inputs, targets, torch.tensor([5, 0, 4]), lambda c: -(c.double() + 1.0)
    )
    assert cands.tolist() == [0, 1, 3, 4, 5]  # distinct targets and negatives, sorted
    assert t.tolist() == [[0, 1, 0, 0, 0], [0, 0, 1, 1, 0]]
    assert m.tolist() == [[1, 0, 0, 0, 1], [0, 0, 0, 0, 0]]  # item 2 is no candidate
    # log pi at every candidate, 0 at the row's own targets (in the set for sure)
    assert log_q.tolist() == [[-1.0, 0.0, -4.0, -5.0, -6.0], [-1.0, -2.0, 0.0, 0.0, -6.0]]


def small(**kw):
    base = dict(
        objective="user",  # opt-in (the default is "interaction")
        embedding_size=16,
        n_hidden=32,
        epochs=30,
        batch_size=32,
        learning_rate=0.01,
        patience=0,
        progress=False,
        device="cpu",
        seed=0,
    )
    return Retriever(**{**base, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"target_softmax": "shared"},
        {"softmax": "sampled", "negatives": "popularity", "n_negatives": 8},
        {"softmax": "sampled"},  # the batch's targets only
    ],
)
def test_user_objective_learns_the_checkerboard(kw):
    board = checkerboard(n_groups=4, users_per_group=25, items_per_group=8, seed=3)
    model = small(**kw).fit(board.train)
    items, _ = model.recommend(board.train, n=1)
    assert (items[:, 0] == board.expected_top1).mean() >= 0.9
    losses = [h["loss"] for h in model.fit_info["history"]]
    assert losses[-1] < losses[0]


def test_sampled_softmax_is_chosen_beyond_the_catalogue_limit():
    board = checkerboard(n_groups=4, users_per_group=25, items_per_group=8, seed=3)
    full = small(epochs=2, full_softmax_max_items=32).fit(board.train)  # 32 items: exact
    auto = small(epochs=2, full_softmax_max_items=31).fit(board.train)  # sampled
    forced = small(epochs=2, softmax="sampled").fit(board.train)
    assert torch.equal(auto.net.id_emb, forced.net.id_emb)
    assert not torch.equal(full.net.id_emb, auto.net.id_emb)


@pytest.mark.parametrize("objective", ["user", "interaction"])
def test_fit_without_validation_trains_exactly_the_epochs(objective):
    """The final benchmark refits on train + valid for the early-stopped number of epochs."""
    board = checkerboard(n_groups=4, users_per_group=10, items_per_group=6, seed=0)
    model = small(epochs=7, objective=objective).fit(board.train + board.test)
    assert model.fit_info["epochs_run"] == 7
    assert [h["epoch"] for h in model.fit_info["history"]] == list(range(7))
    assert model.fit_info["best_epoch"] == 6  # the last epoch's weights are kept


def test_model_saved_before_the_objective_fields_loads(tmp_path):
    board = checkerboard(n_groups=4, users_per_group=10, items_per_group=6, seed=0)
    model = small(epochs=2, objective="interaction").fit(board.train)
    model.save(tmp_path / "m")
    meta_path = tmp_path / "m" / "model.json"
    meta = json.loads(meta_path.read_text())
    for key in ("objective", "holdout_fraction", "target_softmax", "softmax"):
        meta["config"].pop(key)
    meta["config"].pop("full_softmax_max_items")
    meta_path.write_text(json.dumps(meta))
    loaded = Retriever.load(tmp_path / "m")
    np.testing.assert_allclose(loaded.energies(board.train), model.energies(board.train), rtol=1e-6)


def test_bad_objective_options_are_named():
    from recsys_ebm.diagnostics import ConfigError

    with pytest.raises(ConfigError, match="holdout_fraction"):
        Retriever(holdout_fraction=1.0)
    with pytest.raises(ConfigError, match="objective"):
        Retriever(objective="pairs")
    with pytest.raises(ValueError, match="mode"):
        multi_positive_softmax(torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool), mode="x")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("softmax", ["full", "sampled"])
def test_user_objective_on_cuda_with_bf16_autocast(softmax):
    board = checkerboard(n_groups=4, users_per_group=25, items_per_group=8, seed=3)
    model = small(device="cuda", softmax=softmax).fit(board.train)
    items, _ = model.recommend(board.train, n=1)
    assert (items[:, 0] == board.expected_top1).mean() >= 0.9
