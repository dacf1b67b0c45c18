"""Binary RBM: contrastive divergence vs the conditional objective (issue 12).

    python benchmarks/rbm_objectives.py [--curves ml-100k] [--epochs 30]        # learning curves
    python benchmarks/rbm_objectives.py --ablation [--datasets a,b,c] [--device cpu|cuda]
    python benchmarks/rbm_objectives.py --grid [--datasets a,b,c]               # validation only

Protocol (README.md's): per-user random split, 20% test and 10% validation, seed 0.

* ``--curves``: on one dataset, CD-1 (the defaults) and the conditional objective (``COND``),
  each trained on train for ``--epochs`` epochs without early
  stopping; validation NDCG@10 and cumulative wall time after every epoch, printed as a table and
  drawn to benchmarks/figures/rbm_learning_curves.png.
* ``--ablation``: each variant in ``VARIANTS`` on each dataset: early-stopped on validation
  NDCG@10 (the "valid" column: the best epoch's score, the only number used to choose), then
  refitted on train + valid for the best epoch count (``patience=0``), as benchmarks/quality.py
  does, and scored on test (reported, never used to choose), with both fits' seconds.
* ``--grid``: the validation search behind the defaults (``GRID``), validation only.

``SRBM`` is the semi-restricted RBM (``lateral="ease"``: EASE's item-item matrix as fixed lateral
couplings, recsys_ebm/models/_rbm_lateral.py), its L2 the one EASE's validation search chose on
the same dataset (``lateral_l2="ease"`` below; 250, EASE's default, with ``--no-ease``):
``--ablation --variants 7,8,9``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "ml-100k": ROOT.parent / "shared" / "data" / "ml-100k",
    "ml-latest-small": ROOT / "data" / "ml-latest-small",
    "movietweetings-100k": ROOT / "data" / "movietweetings-100k",
}
SPLIT = dict(split="random", test_fraction=0.2, valid_fraction=0.1, seed=0)
#: overrides applied to every run (``--base``)
BASE: dict[str, Any] = {}
FIGURE = ROOT / "benchmarks" / "figures" / "rbm_learning_curves.png"

#: the conditional objective with the settings the validation grid chose for it
COND: dict[str, Any] = dict(objective="conditional", n_hidden=100, batch_size=128)
#: ablation: each change on its own (label, overrides of the RBM defaults, CD-1)
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("CD-1 (defaults)", {}),
    ("conditional, exact softmax", COND),
    ("  with CD's n_hidden 200, batch 32", {"objective": "conditional"}),
    ("  hybrid, cd_weight 1", {**COND, "objective": "hybrid", "cd_weight": 1.0}),
    ("  sampled softmax, 256 items", {**COND, "n_negatives": 256}),
    ("  holdout_fraction 0.25", {**COND, "holdout_fraction": 0.25}),
    ("  no weight decay", {**COND, "weight_decay": 0.0}),
]
#: the semi-restricted RBM, n_hidden chosen on ML-100K validation (10: 0.2093, 20: 0.2125,
#: 100: 0.2080; EASE 0.2132)
SRBM: dict[str, Any] = dict(
    objective="conditional", lateral="ease", lateral_l2="ease", n_hidden=20, batch_size=128
)
VARIANTS += [
    ("semi-restricted (EASE couplings)", SRBM),
    ("  with n_hidden 100", {**SRBM, "n_hidden": 100}),
    ("  without cross-fitting", {**SRBM, "lateral_crossfit": False}),
]
#: the L2 of EASE's validation search on the current dataset (``lateral_l2="ease"``)
EASE_L2 = {"l2": 250.0}
#: the validation grid of the conditional objective (each against COND); --grid
GRID: list[dict[str, Any]] = [
    COND,
    *(
        {**COND, **over}
        for over in (
            {"conditional_lr": 0.003},
            {"conditional_lr": 0.03},
            {"batch_size": 512, "conditional_lr": 0.02},
            {"batch_size": 32},
            {"holdout_fraction": 0.25},
            {"holdout_fraction": 0.75},
            {"weight_decay": 0.0},
            {"weight_decay": 1e-3},
            {"weight_decay": 1e-2},
            {"n_hidden": 50},
            {"n_hidden": 200},
            {"n_hidden": 400},
            {"objective": "hybrid", "cd_weight": 0.1},
            {"objective": "hybrid", "cd_weight": 1.0},
            {"n_negatives": 128},
            {"n_negatives": 512},
        )
    ),
    {},  # CD-1, the defaults
]


def _resolve(over: dict[str, Any]) -> dict[str, Any]:
    """``n_hidden`` given as "x2" or "/2" of the default."""
    from recsys_ebm.models.rbm import RBMConfig

    out = dict(over)
    if out.get("lateral_l2") == "ease":
        out["lateral_l2"] = EASE_L2["l2"]
    h = out.get("n_hidden")
    if isinstance(h, str):
        base = BASE["n_hidden"] if isinstance(BASE.get("n_hidden"), int) else RBMConfig().n_hidden
        out["n_hidden"] = base * 2 if h == "x2" else max(1, base // 2)
    return out


def _data(name: str):  # noqa: ANN202
    from recsys_ebm.data.prepare import prepare_dataset

    return prepare_dataset(DATASETS[name], **SPLIT)


def _rbm(device: str, **over: Any):  # noqa: ANN202
    from recsys_ebm.models.rbm import RBM

    return RBM(progress=False, device=device, **_resolve({**BASE, **over}))


def select_and_refit(ds, over: dict[str, Any], device: str) -> dict[str, float]:  # noqa: ANN001
    """Early-stop on valid, refit on train + valid for the best epoch count, score test."""
    from recsys_ebm.evaluation.protocol import evaluate_ranking

    t0 = time.perf_counter()
    m = _rbm(device, **over).fit(ds.train, ds.valid)
    fit_s = time.perf_counter() - t0
    h = m.fit_info["history"]
    best = max(range(len(h)), key=lambda e: h[e]["valid_ndcg@10"])
    t0 = time.perf_counter()
    full = _rbm(device, **{**over, "epochs": best + 1, "patience": 0}).fit(ds.history("test"))
    refit_s = time.perf_counter() - t0
    res = evaluate_ranking(full, ds.history("test"), ds.test, (10, 20))
    return {
        "valid": h[best]["valid_ndcg@10"],
        "epochs": best + 1,
        "test": res["ndcg@10"],
        "recall20": res["recall@20"],
        "fit_s": fit_s,
        "refit_s": refit_s,
    }


def ease_row(ds) -> dict[str, float]:  # noqa: ANN001
    """EASE as benchmarks/quality.py runs it: L2 on valid, refitted on train + valid."""
    from recsys_ebm.evaluation.protocol import evaluate_ranking
    from recsys_ebm.models.ease import EASE

    def valid_score(l2: float) -> float:
        m = EASE(l2=l2, l2_grid=[]).fit(ds.train)
        return evaluate_ranking(m, ds.history("valid"), ds.valid, (10,))["ndcg@10"]

    scores = {l2: valid_score(l2) for l2 in (50.0, 100.0, 250.0, 500.0, 1000.0)}
    l2 = max(scores, key=scores.__getitem__)
    EASE_L2["l2"] = l2
    m = EASE(l2=l2, l2_grid=[]).fit(ds.history("test"))
    res = evaluate_ranking(m, ds.history("test"), ds.test, (10, 20))
    return {"valid": scores[l2], "test": res["ndcg@10"], "recall20": res["recall@20"], "l2": l2}


def ablation(names: list[str], device: str, with_ease: bool) -> None:
    for name in names:
        ds = _data(name)
        print(f"\n{name}: {ds.n_users} users x {ds.n_items} items, train {ds.train.nnz:,}")
        if with_ease:
            e = ease_row(ds)
            print(
                f"  {'EASE (L2 ' + format(e['l2'], 'g') + ')':<34} valid {e['valid']:.4f}  "
                f"test {e['test']:.4f}  R@20 {e['recall20']:.4f}",
                flush=True,
            )
        for label, over in VARIANTS:
            r = select_and_refit(ds, over, device)
            print(
                f"  {label:<34} valid {r['valid']:.4f}  test {r['test']:.4f}  "
                f"R@20 {r['recall20']:.4f}  epochs {r['epochs']:>2}  fit {r['fit_s']:5.1f}s "
                f"+ refit {r['refit_s']:5.1f}s",
                flush=True,
            )


def grid(names: list[str], device: str, with_ease: bool) -> None:
    for name in names:
        ds = _data(name)
        print(f"\n{name}: validation NDCG@10 (best epoch), early-stopped on valid")
        if with_ease:
            e = ease_row(ds)
            print(f"  EASE (L2 {e['l2']:g}) valid {e['valid']:.4f}  test {e['test']:.4f}")
        for over in GRID:
            t0 = time.perf_counter()
            m = _rbm(device, **over).fit(ds.train, ds.valid)
            h = m.fit_info["history"]
            best = max(range(len(h)), key=lambda e: h[e]["valid_ndcg@10"])
            print(
                f"  {str(over or 'defaults'):<48} valid {h[best]['valid_ndcg@10']:.4f} at epoch "
                f"{best + 1}/{len(h)}  ({time.perf_counter() - t0:.1f}s)",
                flush=True,
            )


def curves(name: str, epochs: int, device: str) -> None:
    ds = _data(name)
    runs = {"CD-1 (defaults)": {}, "conditional (n_hidden 100, batch 128)": COND}
    table: dict[str, list[tuple[float, float]]] = {}
    for label, over in runs.items():
        rows: list[tuple[float, float]] = []
        t0 = time.perf_counter()

        def record(epoch: int, metrics: dict[str, Any], rows=rows, t0=t0) -> None:
            rows.append((metrics["valid_ndcg@10"], time.perf_counter() - t0))

        _rbm(device, **{**over, "epochs": epochs, "patience": 0}).fit(
            ds.train, ds.valid, callback=record
        )
        table[label] = rows
    labels = list(table)
    print(f"\n{name}: validation NDCG@10 per epoch (cumulative wall seconds, monitor included)")
    print("epoch  " + "  ".join(f"{lab:>32}" for lab in labels))
    for e in range(epochs):
        cells = [f"{table[lab][e][0]:.4f} ({table[lab][e][1]:6.1f}s)" for lab in labels]
        print(f"{e + 1:>5}  " + "  ".join(f"{c:>32}" for c in cells))
    _plot(name, table)


def _plot(name: str, table: dict[str, list[tuple[float, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from recsys_ebm.io import atomic_file

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for label, rows in table.items():
        ax1.plot(range(1, len(rows) + 1), [r[0] for r in rows], marker="o", ms=3, label=label)
        ax2.plot([r[1] for r in rows], [r[0] for r in rows], marker="o", ms=3, label=label)
    ax1.set_xlabel("epoch")
    ax2.set_xlabel("wall seconds (validation monitor included)")
    for ax in (ax1, ax2):
        ax.set_ylabel("validation NDCG@10")
        ax.grid(alpha=0.3)
    ax1.legend()
    fig.suptitle(f"Binary RBM on {name}: CD-1 vs the conditional objective")
    fig.tight_layout()
    with atomic_file(FIGURE) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    print(f"wrote {FIGURE.relative_to(ROOT)}")


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--curves", default="ml-100k", choices=sorted(DATASETS))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--ablation", action="store_true", help="the ablation table instead")
    ap.add_argument("--grid", action="store_true", help="the validation grid instead")
    ap.add_argument("--no-ease", action="store_true", help="without the EASE row")
    ap.add_argument("--base", default="{}", help="JSON overrides applied to every run")
    ap.add_argument("--grid-json", default="", help="JSON list of overrides: replaces GRID")
    ap.add_argument("--variants", default="", help="ablation rows to run, 0-based, e.g. 0,3")
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    BASE.update(json.loads(args.base))
    if args.grid_json:
        GRID[:] = json.loads(args.grid_json)
    names = [n for n in args.datasets.split(",") if n]
    for n in names:
        if n not in DATASETS:
            raise SystemExit(f"--datasets: expected names from {sorted(DATASETS)}, got {n!r}")
    print(f"torch threads {torch.get_num_threads()}, device {args.device}")
    if args.variants:
        VARIANTS[:] = [VARIANTS[int(i)] for i in args.variants.split(",")]
    if args.ablation:
        ablation(names, args.device, not args.no_ease)
    elif args.grid:
        grid(names, args.device, not args.no_ease)
    else:
        curves(args.curves, args.epochs, args.device)


if __name__ == "__main__":
    main()
