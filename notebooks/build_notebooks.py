"""Writes the analyst notebooks from the cell sources below; --execute also runs them.

    python notebooks/build_notebooks.py             # sources only (unchanged cells keep outputs)
    python notebooks/build_notebooks.py --execute   # run all four and store their outputs

Keeping the sources here makes notebook diffs readable; the .ipynb files are what analysts open,
committed with their outputs (plots included) so they read without running. Each notebook's first
code cell is tagged ``parameters`` (papermill convention) so the dataset size can be raised
outside CI; tests/test_notebooks.py executes every notebook top to bottom on small data and checks
that the committed ones match these sources and carry outputs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat as nbf

HERE = Path(__file__).resolve().parent
NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["01_data_exploration.ipynb"] = [
    (
        "md",
        """# 1. Data exploration

Interaction distributions, the long tail, what k-core filtering removes, and the statistics of
every leak-free split — on the bundled MovieLens ml-latest-small unless `DATA` points elsewhere.""",
    ),
    (
        "params",
        """# Parameters (raise for bigger data outside CI)
DATA = None            # None = bundled data/ml-latest-small; or a path to any supported log
K_VALUES = [1, 2, 5, 10, 20]
SEED = 0""",
    ),
    (
        "code",
        """%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from recsys_ebm.data.prepare import DEFAULT_INPUT, kcore_mask, prepare_dataset
from recsys_ebm.data.readers import read_interactions

log, fmt = read_interactions(DATA or DEFAULT_INPUT)
print(f"{log.height:,} events in {fmt} format; "
      f"{log['user_id'].n_unique():,} users, {log['item_id'].n_unique():,} items")
log.head()""",
    ),
    ("md", "## Interactions per user and per item (log-log)"),
    (
        "code",
        """per_user = log.group_by("user_id").len()["len"].to_numpy()
per_item = log.group_by("item_id").len()["len"].to_numpy()
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, counts, what in ((axes[0], per_user, "user"), (axes[1], per_item, "item")):
    values, freq = np.unique(counts, return_counts=True)
    ax.loglog(values, freq, "o", ms=3)
    ax.set_xlabel(f"interactions per {what}")
    ax.set_ylabel(f"number of {what}s")
plt.tight_layout()
print("median per user:", np.median(per_user), " median per item:", np.median(per_item))
assert per_user.sum() == per_item.sum() == log.height""",
    ),
    ("md", "## The long tail: share of interactions held by the most popular items"),
    (
        "code",
        """share = np.cumsum(np.sort(per_item)[::-1]) / per_item.sum()
top20 = share[int(0.2 * len(share)) - 1]
plt.figure(figsize=(5, 3.5))
plt.plot(np.arange(1, len(share) + 1) / len(share), share)
plt.axvline(0.2, ls="--", c="gray")
plt.xlabel("share of items (most popular first)")
plt.ylabel("share of interactions")
print(f"the top 20% of items hold {top20:.0%} of interactions")
assert top20 > 0.5, "a long-tailed catalogue: the head dominates"
assert np.all(np.diff(share) >= 0)""",
    ),
    ("md", "## k-core effects"),
    (
        "code",
        """ucode = (log["user_id"].rank("dense") - 1).to_numpy()
icode = (log["item_id"].rank("dense") - 1).to_numpy()
rows = []
for k in K_VALUES:
    mask, iters = kcore_mask(ucode, icode, k, k)
    rows.append({"k": k, "interactions": int(mask.sum()), "users": len(np.unique(ucode[mask])),
                 "items": len(np.unique(icode[mask])), "iterations": iters})
kcore = pl.DataFrame(rows)
print(kcore)
assert (kcore["interactions"].diff().drop_nulls() <= 0).all(), "k-core only ever removes"
kcore""",
    ),
    ("md", "## Split statistics (each split is leak-free: no (user, item) pair in two parts)"),
    (
        "code",
        """stats = []
for split in ["random", "temporal", "leave-last-k", "users"]:
    ds = prepare_dataset(DATA, split=split, seed=SEED)
    parts = {s: set(zip(ds.interactions[s]["user_idx"], ds.interactions[s]["item_idx"]))
             for s in ds.splits}
    names = list(parts)
    assert all(not (parts[a] & parts[b]) for i, a in enumerate(names) for b in names[i + 1:])
    stats.append({"split": split, "users": ds.n_users, "items": ds.n_items,
                  **{s: len(p) for s, p in parts.items()}})
split_stats = pl.DataFrame(stats)
split_stats""",
    ),
    (
        "md",
        """The temporal split keeps far fewer test interactions: in this log most users rate in one
burst, so the last 20% of time belongs mostly to users who never appear in training, and their
pairs are dropped (they have no history to rank from). The held-out-users split is the protocol
for exactly those users.""",
    ),
]

NOTEBOOKS["02_rbm_energy_landscape.ipynb"] = [
    (
        "md",
        """# 2. The RBM's energy landscape

What the RBM learned, seen through its free energy F(v) = -b.v - sum_j softplus(c_j + (vW)_j):
real profiles vs shuffled and random ones, the bias of CD-k against the exact gradient, training
curves, and how weight decay keeps the sampler stable.""",
    ),
    (
        "params",
        """# Parameters (raise outside CI)
DATA = None        # None = bundled ml-latest-small
EPOCHS = 5
N_HIDDEN = 50
SEED = 0""",
    ),
    (
        "code",
        """%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np
import scipy.sparse as sp
import torch

from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.models.rbm import RBM
from recsys_ebm.models._rbm_math import gibbs_vhv
from recsys_ebm.models.rbm_likelihood import exact_cd_gradient, exact_gradient

ds = prepare_dataset(DATA, split="random", seed=SEED)
rbm = RBM(n_hidden=N_HIDDEN, epochs=EPOCHS, patience=0, progress=False, seed=SEED,
          device="cpu").fit(ds.train, ds.valid)
print(rbm)""",
    ),
    ("md", "## Free energy of real, shuffled and random profiles"),
    (
        "code",
        """rng = np.random.default_rng(SEED)
real = ds.train
sizes = real.getnnz(axis=1)
# shuffled: every user keeps their profile size, items drawn by popularity (no co-occurrence)
pop = np.asarray(real.getnnz(axis=0), float) + 1e-9
rows, cols = [], []
for u, k in enumerate(sizes):
    rows += [u] * k
    cols += list(rng.choice(real.shape[1], size=k, replace=False, p=pop / pop.sum()))
shuffled = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=real.shape)
density = real.nnz / np.prod(real.shape)
random_ = sp.csr_matrix((rng.random(real.shape) < density).astype(np.float32))
fe = {name: rbm.free_energy(m) for name, m in
      [("real", real), ("shuffled", shuffled), ("random", random_)]}
plt.figure(figsize=(6, 3.5))
for name, f in fe.items():
    plt.hist(f, bins=50, alpha=0.6, label=f"{name} (mean {f.mean():.0f})")
plt.xlabel("free energy F(v)  (lower = more plausible)")
plt.legend()
assert fe["real"].mean() < fe["shuffled"].mean() < fe["random"].mean()""",
    ),
    ("md", "## CD-k bias against the exact gradient (tiny model, exact enumeration)"),
    (
        "code",
        """g = torch.Generator().manual_seed(SEED)
W = torch.randn(6, 4, generator=g, dtype=torch.float64) * 1.5
b = torch.randn(6, generator=g, dtype=torch.float64) * 0.5
c = torch.randn(4, generator=g, dtype=torch.float64) * 0.5
data = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]],
                    dtype=torch.float64)
exact = exact_gradient(W, b, c, data)
ks = [1, 2, 3, 5, 10, 20, 50, 100]
bias = []
for k in ks:
    cd = exact_cd_gradient(W, b, c, data, k)
    bias.append(float(sum(((cd[n] - exact[n]) ** 2).sum() for n in cd) ** 0.5))
plt.figure(figsize=(5, 3.5))
plt.loglog(ks, bias, "o-")
plt.xlabel("k (Gibbs steps)")
plt.ylabel("|E[CD-k gradient] - exact gradient|")
print(dict(zip(ks, np.round(bias, 4))))
assert bias[-1] < 0.05 * bias[0]""",
    ),
    ("md", "## Training curves: reconstruction error and the train/valid free-energy gap"),
    (
        "code",
        """h = rbm.fit_info["history"]
fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
axes[0].plot([x["reconstruction_error"] for x in h]); axes[0].set_title("reconstruction error")
axes[1].plot([x["free_energy_gap"] for x in h]); axes[1].set_title("F(train) - F(valid), per item")
scored = [x for x in h if "valid_ndcg@10" in x]  # validated every validate_every epochs
axes[2].plot([x["epoch"] for x in scored], [x["valid_ndcg@10"] for x in scored])
axes[2].set_title("validation NDCG@10")
for ax in axes:
    ax.set_xlabel("epoch")
plt.tight_layout()
assert h[-1]["reconstruction_error"] < h[0]["reconstruction_error"]""",
    ),
    (
        "md",
        """## Weight decay and the sampler's stability

With a large learning rate and no decay the weights grow, the free-energy surface gets steep
(the "score field" -grad F is large) and Gibbs chains freeze or explode into implausible profiles.
L2 decay keeps the weights, and the field, bounded.""",
    ),
    (
        "code",
        """rows_ = []
for wd in [0.0, 1e-3, 1e-2, 1e-1]:
    m = RBM(n_hidden=N_HIDDEN, epochs=2, learning_rate=0.2, weight_decay=wd,
            patience=0, progress=False, seed=SEED, device="cpu").fit(ds.train)
    v0 = torch.from_numpy(ds.train[:200].toarray())
    vk, _ = gibbs_vhv(v0, m.W, m.b, m.c, 200, torch.Generator().manual_seed(SEED))
    dF = m.energies(ds.train[:200])
    rows_.append({"weight_decay": wd, "max|W|": float(m.W.abs().max()),
                  "score field std(dF)": float(dF.std()),
                  "density after 200 Gibbs steps": float(vk.mean()),
                  "data density": float(v0.mean())})
import polars as pl
stab = pl.DataFrame(rows_)
print(stab)
plt.figure(figsize=(5, 3.5))
plt.semilogx([max(r["weight_decay"], 1e-4) for r in rows_], [r["max|W|"] for r in rows_], "o-")
plt.xlabel("weight decay (0 drawn at 1e-4)"); plt.ylabel("max |W|")
assert stab["max|W|"][0] > stab["max|W|"][-1], "decay bounds the weights"
stab""",
    ),
]

NOTEBOOKS["03_contrastive_retriever.ipynb"] = [
    (
        "md",
        """# 3. The contrastive retriever

The two-tower retriever is a conditional energy-based model: E(u, i) = -cos(f(u), g(i)) / tau and
p(i | u) = softmax_i(-E(u, i)), trained with InfoNCE (in-batch negatives, logQ correction). This
notebook shows what the temperature tau does to p(i | u), what the item embeddings learned (nearest
neighbours, by title), and how a brand-new user is served from three films they liked, with no
retraining (fold-in).

The item tower is trained here **without** genre features (`use_metadata=False`), so any genre
agreement below was learned from co-occurrence in users' histories alone.""",
    ),
    (
        "params",
        """# Parameters (raise outside CI)
DATA = None                  # None = bundled ml-latest-small
MIN_RATING = 4.0             # ratings >= 4 are the positives
MIN_ITEM_INTERACTIONS = 10   # dataset size: drop rarely liked films (about 1.3k items remain)
MAX_USERS = None             # dataset size: keep only the first N users (None = all)
EPOCHS = 4
EMBEDDING_SIZE = 64
SEED = 0""",
    ),
    (
        "code",
        """%matplotlib inline
import dataclasses
import warnings

import matplotlib.pyplot as plt
import numpy as np
import polars as pl

from recsys_ebm.data.prepare import prepare_dataset
from recsys_ebm.diagnostics import DataWarning
from recsys_ebm.models.popularity import Popularity
from recsys_ebm.models.retriever import Retriever

pl.Config.set_fmt_str_lengths(60)
pl.Config.set_tbl_rows(30)
ds = prepare_dataset(DATA, split="random", seed=SEED, min_rating=MIN_RATING,
                     min_item_interactions=MIN_ITEM_INTERACTIONS)
if MAX_USERS is not None and MAX_USERS < ds.n_users:  # users are indexed 0..U-1: keep a prefix
    ds = dataclasses.replace(
        ds, users=ds.users.head(MAX_USERS),
        interactions={s: df.filter(pl.col("user_idx") < MAX_USERS)
                      for s, df in ds.interactions.items()})
# a small, fast configuration: the per-interaction InfoNCE objective with 512-row batches (511
# in-batch negatives), a few epochs; the settings are pinned so the notebook does not move when
# the library's defaults do (the default objective is now "user": a catalogue softmax per user;
# the default item table starts at the training matrix's spectral vectors, init="spectral", which
# already rank well before any training: a random start shows what training itself learns; the
# default item log-prior b_i, item_bias=True, is left out so that E is the cosine alone)
model = Retriever(objective="interaction", init="random", item_bias=False, embedding_size=EMBEDDING_SIZE, n_hidden=128, batch_size=512,
                  learning_rate=5e-3, epochs=EPOCHS, patience=0, validate_every=1, temperature=0.1,
                  tie_embeddings=False, use_metadata=False, progress=False, seed=SEED,
                  device="cpu").fit_dataset(ds)
popularity = Popularity().fit_dataset(ds)
curve = [round(h["valid_ndcg@10"], 4) for h in model.fit_info["history"]]
print(f"{ds.n_users} users, {ds.n_items} items, {ds.train.nnz:,} training pairs")
print(f"tau = {model.temperature}; validation NDCG@10 by epoch: {curve}")

meta = ds.item_metadata
title_of = dict(zip(meta["item_id"].to_list(), meta["title"].to_list()))
genres_of = dict(zip(meta["item_id"].to_list(), [set(g or []) for g in meta["genres"].to_list()]))
item_ids = ds.item_ids


def item_id(title):
    return meta.filter(pl.col("title") == title)["item_id"][0]


assert curve[-1] > curve[0], "training improves validation NDCG@10\"""",
    ),
    (
        "md",
        """## (a) The temperature: p(i | u) = softmax(-E(u, i) / tau)

Write E1(u, i) = -cos(f(u), g(i)), the energy at tau = 1; the trained model's energy is E1 / tau.
Re-scoring the same energies at other temperatures changes how peaked p(i | u) is, never the
order of the items. Below: one user's distribution over the items they have not seen, and, over
every test user, the mean log-probability of their held-out items (the held-out InfoNCE
likelihood over the whole catalogue): too cold is overconfident, too hot is uniform.""",
    ),
    (
        "code",
        """hist, test = ds.history("test"), ds.test
users = np.flatnonzero(test.getnnz(axis=1) > 0)
E = model.energies(hist[users])                    # (U, I) at the trained tau
E1 = E.astype(np.float64) * model.temperature     # (U, I) energy at tau = 1: -cosine
seen = hist[users].toarray() > 0                   # (U, I) history: not candidates
held_out = test[users].toarray() > 0               # (U, I) the test items


def log_p(tau):
    \"\"\"(U, I) log softmax(-E1 / tau) over each user's unseen items (-inf on seen ones).\"\"\"
    logits = np.where(seen, -np.inf, -E1 / tau)
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


TAUS = [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
u = int(np.argmax(held_out.sum(1)))               # the test user with most held-out items
rows = []
for tau in TAUS:
    lp = log_p(tau)                                 # (U, I)
    p = np.exp(lp)                                  # (U, I), 0 on seen items
    ent = -np.where(p > 0, p * np.where(p > 0, lp, 0.0), 0.0).sum(axis=1)   # (U,) nats
    rows.append({"tau": tau, "entropy, user u": float(ent[u]),
                 "median entropy, all test users": float(np.median(ent)),
                 "top-1 p, user u": float(p[u].max()),
                 "top-10 mass, user u": float(np.sort(p[u])[-10:].sum()),
                 "mean log p(held-out)": float(lp[held_out].mean())})
temps = pl.DataFrame(rows)
n_unseen = int((~seen[u]).sum())
log_unseen = np.log((~seen).sum(axis=1))           # (U,) entropy of the uniform distribution

fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
for tau in TAUS:
    axes[0].semilogy(np.sort(np.exp(log_p(tau)[u]))[::-1][:50], label=f"tau={tau}")
axes[0].set_xlabel("rank"); axes[0].set_ylabel("p(i | u)"); axes[0].legend(fontsize=7)
axes[0].set_title(f"user {ds.user_ids[users[u]]}: top 50 of {n_unseen} unseen items")
axes[1].semilogx(TAUS, temps["entropy, user u"], "o-", label="user u")
axes[1].semilogx(TAUS, temps["median entropy, all test users"], "s-", label="median, all users")
axes[1].axhline(np.log(n_unseen), ls="--", c="gray", label="uniform for user u: log(#unseen)")
axes[1].axvline(model.temperature, ls=":", c="k", label="trained tau")
axes[1].set_xlabel("tau"); axes[1].set_ylabel("entropy of p(. | u)"); axes[1].legend(fontsize=7)
axes[2].semilogx(TAUS, temps["mean log p(held-out)"], "o-")
axes[2].axvline(model.temperature, ls=":", c="k")
axes[2].set_xlabel("tau"); axes[2].set_ylabel("mean log p(held-out item | u)")
plt.tight_layout()

# the trained model's p(i | u) is exactly softmax(-E) at its own tau
p_model = np.exp(log_p(model.temperature)[u])
w = np.exp(np.where(seen[u], -np.inf, -E[u]) - (-E[u][~seen[u]]).max())
np.testing.assert_allclose(p_model, w / w.sum(), rtol=1e-4, atol=1e-8)
# entropy falls with tau, for user u and over all test users. The sharpness claim rests on the
# median over every test user: one user's entropy at tau = 0.02 moves with the float summation
# order (the machine's thread count), the median over ~600 users does not
for col in ("entropy, user u", "median entropy, all test users"):
    assert np.all(np.diff(temps[col].to_numpy()) > 0), f"{col}: entropy must rise with tau"
med = temps["median entropy, all test users"].to_numpy()
assert temps["entropy, user u"][-1] <= np.log(n_unseen)
assert med[-1] <= np.median(log_unseen) and med[0] < 0.5 * np.median(log_unseen)
# the temperature changes the sharpness, not the ranking
orders = [np.argsort(-log_p(tau)[u], kind="stable")[:20] for tau in TAUS]
assert all(np.array_equal(o, orders[0]) for o in orders)
# held-out likelihood is best at an intermediate temperature: the extremes are both worse
ll = temps["mean log p(held-out)"].to_numpy()
assert ll.argmax() not in (0, len(TAUS) - 1)
temps""",
    ),
    (
        "md",
        """## (b) Item-embedding neighbourhoods

Nearest neighbours by cosine over `item_embeddings()`, for a few well-known films. The tower never
saw a genre, yet a film's neighbours share a genre with it more often than random films do, and
co-occur in users' histories far more often. What the towers see is co-occurrence, not content:
a film that nearly everyone liked (Toy Story) sits among other films that nearly everyone liked.""",
    ),
    (
        "code",
        """V = model.item_embeddings()
V = V / np.linalg.norm(V, axis=1, keepdims=True)   # (I, D) unit rows (cosine is already unit)
C = V @ V.T                                         # (I, I) cosine similarity
np.fill_diagonal(C, -np.inf)

QUERIES = ["Toy Story (1995)", "Matrix, The (1999)", "Godfather, The (1972)",
           "Silence of the Lambs, The (1991)"]
rows = []
for q in QUERIES:
    qi = ds.item_index([item_id(q)])[0]
    for rank, j in enumerate(np.argsort(-C[qi])[:5], 1):
        rows.append({"film": q, "rank": rank, "neighbour": title_of[item_ids[j]],
                     "cosine": round(float(C[qi, j]), 3),
                     "genres": ", ".join(sorted(genres_of[item_ids[j]]))})
neighbours = pl.DataFrame(rows)

# over the 200 most-liked films: genre agreement and co-occurrence, neighbours vs random films
counts = ds.train.getnnz(axis=0)
queries = np.argsort(-counts)[:200]
nn = np.argsort(-C[queries], axis=1)[:, :10]       # (200, 10)
rng = np.random.default_rng(SEED)
rand = rng.integers(0, ds.n_items, size=nn.shape)  # (200, 10)


def shares_genre(a, b):
    return bool(genres_of.get(item_ids[a], set()) & genres_of.get(item_ids[b], set()))


X = ds.train.T.tocsr()                              # (I, U)
co = (X[queries] @ X.T).toarray()                   # (200, I) co-occurrence counts
stats = pl.DataFrame({
    "pairs": ["query, its 10 nearest neighbours", "query, 10 random films"],
    "share a genre": [np.mean([shares_genre(q, j) for q, r in zip(queries, nn) for j in r]),
                      np.mean([shares_genre(q, j) for q, r in zip(queries, rand) for j in r])],
    "mean co-occurrence": [np.take_along_axis(co, nn, 1).mean(),
                           np.take_along_axis(co, rand, 1).mean()],
})
print(stats)
fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(["neighbours", "random"], stats["share a genre"])
ax.set_ylabel("share of pairs with a common genre")
assert stats["share a genre"][0] > stats["share a genre"][1]
assert stats["mean co-occurrence"][0] > 1.5 * stats["mean co-occurrence"][1]
neighbours""",
    ),
    (
        "md",
        """## (c) Fold-in: a new user who liked three films

A hand-made user, given as raw MovieLens ids (looked up by title), is encoded by the user tower
from that history alone: no user id, no retraining. An id the model does not know is dropped with
a `DataWarning` (the documented policy). The retriever's list should lean towards the films'
shared genres far more than the popularity list, and must not repeat the three films.""",
    ),
    (
        "code",
        """LIKED = ["Toy Story (1995)", "Lion King, The (1994)", "Aladdin (1992)"]
liked = [item_id(t) for t in LIKED]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    new_user = model.histories_from_ids([liked + [-42]])   # (1, I); -42 is not a film
assert [w.category for w in caught] == [DataWarning] and new_user.nnz == 3

items, energies = model.recommend(new_user, n=10)            # (1, 10) each, lowest energy first
pop_items, _ = popularity.recommend(new_user, n=10)
shared = set.intersection(*(genres_of[i] for i in liked))
recs = pl.DataFrame({
    "retriever": [title_of[item_ids[j]] for j in items[0]],
    "energy": energies[0],
    "popularity": [title_of[item_ids[j]] for j in pop_items[0]],
})


def genre_share(idx):
    return float(np.mean([bool(genres_of[item_ids[j]] & shared) for j in idx]))


print(f"genres all three share: {sorted(shared)}")
print(f"share of the list with one of them: retriever {genre_share(items[0]):.0%}, "
      f"popularity {genre_share(pop_items[0]):.0%}")
assert not set(item_ids[items[0]]) & set(liked), "the served list excludes the input films"
assert np.all(np.diff(energies[0]) >= 0)
assert genre_share(items[0]) > genre_share(pop_items[0])
recs""",
    ),
]

NOTEBOOKS["04_model_comparison.ipynb"] = [
    (
        "md",
        """# 4. Model comparison from MLflow

Reads the MLflow runs of **one run of the quickstart pipeline** back into pandas, compares the
models, plots metric@K, and explains one user's RBM recommendations item by item from energies.

Which runs are read: a pipeline run is an MLflow run tagged `stage = pipeline`; its `evaluate`
stage is a child run (tag `mlflow.parentRunId`), and each model's metrics are grandchildren
(`stage = evaluate-model`). By default the notebook takes the **latest pipeline run that
evaluated models** (a rerun whose stages were all skipped logs no evaluation), so runs logged by
hand - a manual `recsys-ebm evaluate`, another pipeline's runs - are never mixed in. Set
`PIPELINE_RUN_ID` to read another one; the cell below prints the ones available.

Where the runs come from: by default the repository's `mlflow.db`, which
`recsys-ebm run pipelines/quickstart.toml` writes when run from the repository root (relative
`sqlite:///` paths are resolved from the repository root, not from this notebook's folder). If
that file does not exist, or `RUN_PIPELINE = True`, the pipeline is first run here on reduced
settings (a minute or two).""",
    ),
    (
        "params",
        """# Parameters
TRACKING_URI = None      # None = the repository's mlflow.db; or e.g. "sqlite:////abs/path/mlflow.db"
PIPELINE_RUN_ID = None   # None = the latest pipeline run that evaluated models
RUN_DIR = None           # None = that pipeline run's run directory (its pipeline.run_dir param)
RUN_PIPELINE = False     # True = run the quickstart pipeline here first (reduced settings)
RBM_EPOCHS = 2           # used only when the pipeline is run here (reduced settings)
RBM_HIDDEN = 32
RETRIEVER_EPOCHS = 15      # the per-user objective: 3 steps an epoch on the bundled data""",
    ),
    (
        "code",
        """%matplotlib inline
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import mlflow
import numpy as np
import pandas as pd

import recsys_ebm
from recsys_ebm import Dataset, load_model

ROOT = Path(recsys_ebm.__file__).resolve().parents[1]   # the repository root


def store_path(uri):
    \"\"\"The SQLite file of a sqlite:/// URI, relative paths taken from the repository root.\"\"\"
    path = Path(uri.removeprefix("sqlite:///"))
    return path if path.is_absolute() else ROOT / path


if TRACKING_URI is None:
    TRACKING_URI = f"sqlite:///{ROOT / 'mlflow.db'}"
    if not store_path(TRACKING_URI).exists():
        RUN_PIPELINE = True
if TRACKING_URI.startswith("sqlite:///"):
    TRACKING_URI = f"sqlite:///{store_path(TRACKING_URI)}"
if RUN_PIPELINE:
    RUN_DIR = RUN_DIR or str(Path(tempfile.mkdtemp()) / "run")
    if TRACKING_URI == f"sqlite:///{ROOT / 'mlflow.db'}":   # keep the user's store untouched
        TRACKING_URI = f"sqlite:///{Path(RUN_DIR).parent / 'mlflow.db'}"
    cmd = [sys.executable, "-m", "recsys_ebm", "run", str(ROOT / "pipelines" / "quickstart.toml"),
           "--run-dir", RUN_DIR, "--tracking-uri", TRACKING_URI,
           "--set", f"train.rbm.set.epochs={RBM_EPOCHS}",
           "--set", f"train.rbm.set.n_hidden={RBM_HIDDEN}",
           "--set", f"train.retriever.set.epochs={RETRIEVER_EPOCHS}",
           "--set", "train.ease.set.l2_grid=[]", "--set", "evaluate.bootstrap=100"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"the pipeline failed (exit {proc.returncode}):\\n{proc.stderr[-3000:]}")
# never let MLflow create an empty store where the user expected theirs
if TRACKING_URI.startswith("sqlite:///") and not store_path(TRACKING_URI).exists():
    raise FileNotFoundError(
        f"TRACKING_URI: no MLflow store at {store_path(TRACKING_URI)}; run "
        f"`recsys-ebm run pipelines/quickstart.toml` from the repository root ({ROOT}) first, "
        "or set RUN_PIPELINE = True")
mlflow.set_tracking_uri(TRACKING_URI)
runs = mlflow.search_runs(experiment_names=["recsys-ebm"])
if runs.empty or "tags.stage" not in runs:
    raise ValueError(
        f"TRACKING_URI: the MLflow store {TRACKING_URI} has no runs in experiment 'recsys-ebm'; "
        "run `recsys-ebm run pipelines/quickstart.toml` from the repository root first, "
        "or set RUN_PIPELINE = True")
parent = runs.get("tags.mlflow.parentRunId", pd.Series(index=runs.index, dtype=object))
evaluations = runs[runs["tags.stage"] == "evaluate"]
pipelines = runs[runs["tags.stage"] == "pipeline"].sort_values("start_time", ascending=False)
pipelines = pipelines.assign(
    evaluated=pipelines["run_id"].isin(parent[evaluations.index]),
    run_dir=pipelines.get("params.pipeline.run_dir"))
print(f"{len(runs)} runs in the store; pipeline runs, latest first:")
print(pipelines[["run_id", "start_time", "tags.pipeline", "run_dir", "evaluated"]]
      .to_string(index=False))
if PIPELINE_RUN_ID is None:
    if not pipelines["evaluated"].any():
        raise ValueError(
            f"TRACKING_URI: no pipeline run in {TRACKING_URI} evaluated models; run "
            "`recsys-ebm run pipelines/quickstart.toml` (add --force to rerun every stage)")
    PIPELINE_RUN_ID = pipelines[pipelines["evaluated"]]["run_id"].iloc[0]
if PIPELINE_RUN_ID not in set(pipelines["run_id"]):
    raise ValueError(f"PIPELINE_RUN_ID: expected one of the pipeline runs listed above, "
                     f"got {PIPELINE_RUN_ID!r}")
pipeline_run = pipelines.set_index("run_id").loc[PIPELINE_RUN_ID]
evaluate_ids = set(evaluations[parent[evaluations.index] == PIPELINE_RUN_ID]["run_id"])
if not evaluate_ids:
    raise ValueError(f"PIPELINE_RUN_ID: pipeline run {PIPELINE_RUN_ID} has no evaluate stage "
                     "(it was skipped as unchanged); pick one whose 'evaluated' is True")
RUN_DIR = Path(RUN_DIR or pipeline_run["run_dir"])
RUN_DIR = RUN_DIR if RUN_DIR.is_absolute() else ROOT / RUN_DIR
shown = RUN_DIR.relative_to(ROOT) if RUN_DIR.is_relative_to(ROOT) else RUN_DIR
print(f"\\nreading pipeline run {PIPELINE_RUN_ID} ({pipeline_run['tags.pipeline']}, "
      f"started {pipeline_run['start_time']:%Y-%m-%d %H:%M}); run directory {shown}")""",
    ),
    ("md", "## Per-model evaluation runs as a table"),
    (
        "code",
        """ev = runs[(runs["tags.stage"] == "evaluate-model") & parent.isin(evaluate_ids)]
ev = ev.sort_values("start_time").drop_duplicates("tags.model", keep="last")
ev = ev.set_index("tags.model")
cols = [c for c in ev.columns
        if c.startswith("metrics.ndcg_at_") or c.startswith("metrics.recall_at_")]
table = ev[cols].dropna(axis=1, how="all")   # columns other runs of the store logged
table = table.rename(columns=lambda c: c.replace("metrics.", "").replace("_at_", "@"))
table = table[sorted(table.columns, key=lambda c: (c.split("@")[0], int(c.split("@")[1])))]
assert {"popularity", "ease", "als", "rbm", "retriever", "ranker"} <= set(table.index)
assert (table["ndcg@10"].drop("popularity") > table.loc["popularity", "ndcg@10"]).all()
table.round(4)""",
    ),
    ("md", "## Metric@K"),
    (
        "code",
        """fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, metric in zip(axes, ["recall", "ndcg"]):
    ks = sorted(int(c.split("@")[1]) for c in table.columns if c.startswith(metric))
    for model, row in table.iterrows():
        ax.plot(ks, [row[f"{metric}@{k}"] for k in ks], marker="o", label=model)
    ax.set_xlabel("K"); ax.set_ylabel(f"{metric}@K"); ax.set_title(f"{metric}@K")
axes[0].legend()
fig.suptitle(f"pipeline run {PIPELINE_RUN_ID[:8]}: {len(table)} models")
plt.tight_layout()""",
    ),
    (
        "md",
        """## One user's RBM recommendations, item by item

For the RBM, energy(u, i) = dF_i = -b_i - sum_j log1p(sigmoid(x_j) expm1(W_ij)), x = c + vW: a
popularity-like prior -b_i plus the pull of the user's hidden features. The history items whose
weight vectors point the same way as the recommended item's explain the pull.""",
    ),
    (
        "code",
        """ds = Dataset.load(Path(RUN_DIR) / "data")
rbm = load_model(Path(RUN_DIR) / "models" / "rbm")
titles = dict(zip(ds.item_metadata["item_id"].to_list(), ds.item_metadata["title"].to_list()))
u = int(np.argmax(ds.history("test").getnnz(axis=1) > 20))
hist = ds.history("test")[u]
items, energies = rbm.recommend(hist, n=5)
W = rbm.W.numpy(); b = rbm.b.numpy()
Wn = W / np.linalg.norm(W, axis=1, keepdims=True)
rows = []
for i, e in zip(items[0], energies[0]):
    sims = Wn[hist.indices] @ Wn[i]
    because = [titles.get(ds.item_ids[j], str(ds.item_ids[j]))
               for j in hist.indices[np.argsort(-sims)[:2]]]
    rows.append({"item": titles.get(ds.item_ids[i], str(ds.item_ids[i])), "energy dF": e,
                 "prior -b_i": -b[i], "hidden-feature pull": e + b[i],
                 "because you liked": because})
explain = pd.DataFrame(rows)
assert np.allclose(explain["prior -b_i"] + explain["hidden-feature pull"], explain["energy dF"])
assert (np.diff(explain["energy dF"]) >= 0).all()
explain""",
    ),
]


def generate(name: str) -> nbf.NotebookNode:
    """The notebook ``name`` as the sources above define it, without outputs."""
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    for k, (kind, src) in enumerate(NOTEBOOKS[name]):
        if kind == "md":
            cell = nbf.v4.new_markdown_cell(src)
        else:
            cell = nbf.v4.new_code_cell(src)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
        # stable cell ids (nbformat draws random ones): rebuilding leaves unchanged cells alone
        cell.id = hashlib.sha1(f"{name}:{k}".encode()).hexdigest()[:8]
        nb.cells.append(cell)
    return nb


def is_plot_cell(source: str) -> bool:
    """Whether a code cell draws a figure (its committed outputs must hold an image)."""
    return "plt.figure(" in source or "plt.subplots(" in source


def _keep_outputs(new: nbf.NotebookNode, path: Path) -> None:
    """Copy outputs of cells whose source did not change from the notebook at ``path``."""
    if not path.exists():
        return
    old = {c.id: c for c in nbf.read(path, as_version=4).cells if c.cell_type == "code"}
    for cell in new.cells:
        prev = old.get(cell.id)
        if cell.cell_type == "code" and prev is not None and prev.source == cell.source:
            cell.outputs = prev.outputs
            cell.execution_count = prev.execution_count


def execute(nb: nbf.NotebookNode, *, timeout: int = 1800) -> None:
    """Run ``nb`` top to bottom in a fresh kernel whose working directory is notebooks/."""
    from nbclient import NotebookClient

    NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        record_timing=False,  # no timestamps in the committed files
        resources={"metadata": {"path": str(HERE)}},
    ).execute()


def build(names: list[str] | None = None, *, run: bool = False) -> None:
    """Write the notebooks; ``run`` executes them and stores their outputs (plots included).

    Without ``run``, a cell whose source is unchanged keeps the outputs already committed, and
    a changed cell loses them (tests/test_notebooks.py then asks for ``--execute``).
    """
    for name in names or list(NOTEBOOKS):
        nb = generate(name)
        if run:
            print(f"executing {name} ...", flush=True)
            execute(nb)
        else:
            _keep_outputs(nb, HERE / name)
        tmp = HERE / f".{name}.tmp"
        nbf.write(nb, tmp)
        tmp.replace(HERE / name)  # atomic: an interrupted run leaves the old notebook


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--execute",
        action="store_true",
        help="run every notebook (bundled data; notebook 04 reads the repository's mlflow.db "
        "after `recsys-ebm run pipelines/quickstart.toml`, else runs the pipeline itself) and "
        "commit-ready outputs",
    )
    parser.add_argument("names", nargs="*", metavar="NAME.ipynb", help="default: all four")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(NOTEBOOKS))
    if unknown:
        parser.error(f"names: expected some of {sorted(NOTEBOOKS)}, got {unknown}")
    build(args.names or None, run=args.execute)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
