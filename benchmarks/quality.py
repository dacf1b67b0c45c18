"""Quality benchmark of issue 12: every model against EASE on three datasets, in one run.

    python benchmarks/quality.py [--datasets ml-100k,ml-latest-small,movietweetings-100k]
        [--ml100k PATH] [--threads 2] [--device auto|cpu|cuda] [--bpr] [--softmax-rbm]
        [--components ease,als,rbm,retriever] [--ranker reuse|fit] [--ranker-set JSON]
        [--also-ranker JSON] [--seeds 0,1,2] [--json OUT.json] [--on-valid]

Protocol (README.md's): per-user random split, 20% test and 10% validation, seed 0; every model
ranks the whole catalogue for every test user from train + valid, that history masked.
Every choice is made on validation only, and every final fit sees train + valid:

* popularity: fitted on train + valid.
* EASE: L2 from {50, 100, 250, 500, 1000} on validation NDCG@10, refitted on train + valid.
* DLAE: EASE with input dropout 0.5 (``EASE(dropout=0.5)``, Steck 2020), the same L2 search.
* ALS (implicit): factors {32, 64, 128} x alpha {1, 5} on validation, refitted. BPR (``--bpr``,
  slow): implicit's defaults with 64 factors, fitted on train + valid.
* the EBMs (``rbm``, ``retriever``, ``softmax-rbm`` with ``--softmax-rbm``): their defaults,
  early-stopped on validation NDCG@10 (RMSE for the softmax RBM); then a fresh model
  ``cls(epochs=best_epoch + 1, patience=0)`` is fitted on train + valid, so the EBMs get the same
  data as the refitted baselines. "fit s" is both fits.
* ranker: ``Ranker()`` with its defaults. ``--ranker fit`` runs ``Ranker().fit_dataset`` as a
  user does (it trains its own components); ``--ranker reuse`` (default, half the time) builds
  the same ranker from the single models' own fits: their train fits give the blend weights
  (learned on validation), their train + valid fits are the components (``reuse_ranker``).

``--on-valid`` runs all of it one step back (:func:`validation_replica`): each user's training
pairs are split again (1/8 inner validation), and the outer validation split plays test, so that
a change to any default can be judged by the whole protocol without reading test.

``--seeds`` fits the EBMs and builds the ranker once per seed (the baselines are deterministic
given their grid and fitted once), and averages each user's NDCG@10 and Recall@20 over the seeds
before the table and the paired tests: a single seed moves an EBM's NDCG@10 by up to about 2.5%
(benchmarks/README.md), more than some of the gaps the targets measure.

Per dataset a table: NDCG@10, Recall@20, fit seconds (selection + refit), and the paired
comparison of per-user NDCG@10, ranker minus model: mean difference, paired t-test p and
Wilcoxon signed-rank p (``recsys_ebm.evaluation.stats.paired_test``). Then a TARGETS block:
rbm >= EASE, retriever >= EASE and ranker >= 1.05 x EASE (NDCG@10) on each dataset, PASS/FAIL.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATASETS = {
    "ml-100k": ROOT.parent / "shared" / "data" / "ml-100k",
    "ml-latest-small": ROOT / "data" / "ml-latest-small",
    "movietweetings-100k": ROOT / "data" / "movietweetings-100k",
}
SPLIT = dict(split="random", test_fraction=0.2, valid_fraction=0.1, seed=0)
TARGET_RANKER = 1.05  # ranker NDCG@10 >= 1.05 x EASE's (issue 12)
#: table rows that are another registry model's config: DLAE is EASE with input dropout 0.5
REGISTRY = {"dlae": "ease"}
#: EASE's L2 grid, chosen on validation (every script that scores against EASE)
EASE_GRID = [{"l2": v, "l2_grid": []} for v in (50.0, 100.0, 250.0, 500.0, 1000.0)]


def dataset_names(ap: argparse.ArgumentParser, datasets: str) -> list[str]:
    """The names of a comma-separated ``--datasets`` value (``ap.error`` on an unknown one)."""
    names = [d.strip() for d in datasets.split(",") if d.strip()]
    unknown = [d for d in names if d not in DATASETS]
    if unknown:
        ap.error(f"--datasets: expected names from {list(DATASETS)}, got {unknown}")
    return names


def dataset_path(name: str, ml100k: str | Path) -> Path | None:
    """Where dataset ``name`` is (``ml100k`` for ML-100K), or None, after a [skip] line, when it
    is not there."""
    path = Path(ml100k) if name == "ml-100k" else DATASETS[name]
    if path.exists():
        return path
    print(
        f"\n[skip] {name}: not found at {path}"
        + (" (pass --ml100k PATH)" if name == "ml-100k" else "")
    )
    return None


def validation_replica(ds: Any, seed: int = 0) -> Any:
    """The benchmark's split moved one step back, so that it never reads test (``--on-valid``).

    Each user's training pairs are split again at random (``seed``): 1/8 of them become an inner
    validation split (inner valid / inner train = 1/7, the outer valid / train ratio of the 70/10
    split), the rest the inner train, and the outer validation split plays test. Every fit,
    search and blend of the benchmark then runs as usual on the replica, and its "test" figures
    are validation figures: a whole-protocol comparison made on validation only.
    """
    import dataclasses as dc

    import polars as pl

    from recsys_ebm.data.splits import TEST, pair_keys, random_split

    train = ds.interactions["train"]
    users, items = train["user_idx"].to_numpy(), train["item_idx"].to_numpy()
    part = random_split(users, pair_keys(users, items, seed), 1 / 8, 0.0)
    held = pl.Series(part == TEST)
    inter = {
        "train": train.filter(~held),
        "valid": train.filter(held),
        "test": ds.interactions["valid"],
    }
    return dc.replace(ds, interactions=inter)


def _has_field(cls: Any, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(cls.config_class))


def make(name: str, device: str, threads: int, **params: Any) -> Any:
    """A model by registry name with ``params``, on ``device`` and quiet where it can be."""
    from recsys_ebm.models import get_model_class

    cls = get_model_class(name)
    extra: dict[str, Any] = {}
    if _has_field(cls, "device"):
        extra["device"] = device
    if _has_field(cls, "progress"):
        extra["progress"] = False
    if _has_field(cls, "num_threads"):
        extra["num_threads"] = threads
    return cls(**{**extra, **params})


def select_refit(name: str, grid: list[dict], ds: Any, device: str, threads: int) -> tuple:
    """Pick params on validation NDCG@10 (fit on train), refit the best on train + valid."""
    from recsys_ebm.evaluation.protocol import evaluate_ranking

    name = REGISTRY.get(name, name)
    t0 = time.perf_counter()
    best, best_score, first = grid[0], -1.0, None
    if len(grid) > 1:
        for params in grid:
            m = make(name, device, threads, **params).fit(ds.train)
            s = evaluate_ranking(m, ds.history("valid"), ds.valid, (10,))["ndcg@10"]
            if s > best_score:
                best, best_score, first = params, s, m
    model = make(name, device, threads, **best).fit(ds.history("test"))
    desc = ", ".join(f"{k} {v}" for k, v in best.items())
    return model, time.perf_counter() - t0, desc, first


def early_stop_refit(
    name: str,
    ds: Any,
    device: str,
    threads: int,
    params: dict[str, Any] | None = None,
    stop_on: Any = None,
) -> tuple:
    """Defaults (with ``params``) early-stopped on validation (``stop_on``'s validation pairs
    when given: the same dataset with fewer of them), then ``epochs=best+1, patience=0`` on
    ``ds``'s train + valid. Returns (refit, seconds, description, the early-stopped fit)."""
    from recsys_ebm.ranking._ranker_data import merge_valid
    from recsys_ebm.ranking._refit import best_epoch

    t0 = time.perf_counter()
    params = params or {}
    what = ", ".join(f"{k} {v}" for k, v in params.items()) or "defaults"
    first = make(name, device, threads, **params).fit_dataset(ds if stop_on is None else stop_on)
    ep = best_epoch(first)
    if ep is None:
        return first, time.perf_counter() - t0, f"{what} (no best epoch: not refitted)", first
    again = {**params, "epochs": ep + 1, "patience": 0}
    model = make(name, device, threads, **again).fit_dataset(merge_valid(ds))
    return model, time.perf_counter() - t0, f"{what}, {ep + 1} epochs (best on valid)", first


def replica_with_ease(path: Path, threads: int) -> tuple:
    """The validation replica of the dataset at ``path`` (:func:`validation_replica`), the
    history that scores its outer validation split, and EASE with its L2 chosen on the inner
    validation split: (replica, history, EASE refitted, EASE on the inner train, EASE's
    NDCG@10)."""
    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.evaluation.protocol import evaluate_ranking

    ds = validation_replica(prepare_dataset(path, **SPLIT))
    hist = ds.history("test")
    ease, _, _, first = select_refit("ease", EASE_GRID, ds, "cpu", threads)
    return ds, hist, ease, first, evaluate_ranking(ease, hist, ds.test, (10,))["ndcg@10"]


def reuse_ranker(models: dict[str, tuple], ds: Any, overrides: dict, dev: str, thr: int) -> tuple:
    """The default ranker built from the single models' own fits (``--ranker reuse``).

    ``Ranker().fit_dataset`` fits each component on train (early-stopping on valid), learns the
    blend on valid, then refits on train + valid (early-stopped ones for their best epoch
    count). The single models above went through the same fits, so their train fits give the
    blend (``Ranker.from_fitted``, same validation users, same search) and their final fits
    become the components. A component whose single model has another config (ALS: the
    ranker's fixed factors / alpha against the benchmark's grid) is fitted as the ranker would.
    The fit time is the sum of the components' fit times and the blend's.
    """
    import copy

    from recsys_ebm.ranking import Ranker, RankerConfig
    from recsys_ebm.ranking._ranker_data import merge_valid
    from recsys_ebm.ranking._refit import refit_model

    cfg = RankerConfig(**overrides)
    first, final, secs = [], [], 0.0
    for name in cfg.components:
        params = (cfg.component_config or {}).get(name, {})
        rows = [name, *(k for k, v in REGISTRY.items() if v == name)]  # "ease": EASE, DLAE
        single = next(
            (
                models[r]
                for r in rows
                if r in models
                and models[r][3] is not None
                and all(getattr(models[r][3].config, k) == v for k, v in params.items())
            ),
            None,
        )
        if single is not None:
            first.append(single[3])
            final.append(single[0])
            secs += single[1]
            continue
        t0 = time.perf_counter()
        m = make(name, dev, thr, **params).fit_dataset(ds)
        again = copy.deepcopy(m)
        refit_model(again, lambda x: x.fit_dataset(merge_valid(ds)))
        first.append(m)
        final.append(again)
        secs += time.perf_counter() - t0
    t0 = time.perf_counter()
    rest = {k: v for k, v in overrides.items() if k != "components"}
    ranker = Ranker.from_fitted(first, ds.history("valid"), ds.valid, **rest)
    ranker.components = final  # the train + valid fits, as Ranker.fit_dataset's refit
    ranker.item_vocab, ranker.user_vocab = ds.item_vocab, ds.user_vocab
    return ranker, secs + time.perf_counter() - t0


def per_user(model: Any, ds: Any) -> dict[str, np.ndarray]:
    """Per-test-user NDCG@10 and Recall@20, full ranking from train + valid (masked)."""
    from recsys_ebm.evaluation.metrics import ranking_metrics

    hist = ds.history("test", values=model.history_values)
    rows = ds.eval_users("test")
    items, _ = model.recommend(hist[rows], n=20, users=rows)
    return ranking_metrics(items, ds.test[rows], (10, 20))


def merge_component_config(sets: dict) -> dict:
    """``sets`` with its ``component_config`` merged into the default ranker's (so that an
    override of one component keeps the others' settings, ALS its factors)."""
    from recsys_ebm.ranking import RankerConfig

    if "component_config" not in sets:
        return dict(sets)
    base = dict(RankerConfig().component_config or {})
    return {**sets, "component_config": {**base, **sets["component_config"]}}


def build_ranker(models: dict, ds: Any, args: argparse.Namespace, sets: dict) -> tuple:
    """The ranker with RankerConfig overrides ``sets``: (ranker, fit seconds, description)."""
    from recsys_ebm.ranking import Ranker

    dev, thr = args.device, args.threads
    overrides: dict[str, Any] = {"device": dev, **merge_component_config(sets)}
    if args.components:
        overrides["components"] = tuple(args.components.split(","))
    if args.ranker == "reuse":
        ranker, fit_s = reuse_ranker(models, ds, overrides, dev, thr)
    else:
        t0 = time.perf_counter()
        ranker = Ranker(**overrides).fit_dataset(ds)
        fit_s = time.perf_counter() - t0
    info = ranker.fit_info
    weights = ", ".join(
        f"{c} {w:.2f}" for c, w in zip(info["components"], info["weights"], strict=True)
    )
    if "blend_betas" in info:
        weights += "; inverse temperatures " + ", ".join(f"{b:.3g}" for b in info["blend_betas"])
    return ranker, fit_s, f"{args.ranker}: weights {weights}"


def run_dataset(label: str, ds: Any, args: argparse.Namespace) -> list[dict]:
    from recsys_ebm.evaluation.stats import paired_test

    dev, thr = args.device, args.threads
    print(
        f"\n== {label}: {ds.n_users} users x {ds.n_items} items, train {ds.train.nnz:,} / "
        f"valid {ds.valid.nnz:,} / test {ds.test.nnz:,}; {len(ds.eval_users('test'))} test users",
        flush=True,
    )
    grids: dict[str, list[dict]] = {
        "popularity": [{}],
        "ease": EASE_GRID,
        "dlae": [{**g, "dropout": 0.5} for g in EASE_GRID],
        "als": [{"factors": f, "alpha": a} for f in (32, 64, 128) for a in (1.0, 5.0)],
    }
    if args.bpr:
        grids["bpr"] = [{"factors": 64}]
    models: dict[str, tuple] = {}
    for name, grid in grids.items():
        models[name] = select_refit(name, grid, ds, dev, thr)
        print(f"  {name}: {models[name][1]:.1f} s ({models[name][2]})", flush=True)
    scores = {name: per_user(m, ds) for name, (m, *_) in models.items()}
    ebms = ["rbm", "retriever"] + (["softmax-rbm"] if args.softmax_rbm else [])
    seeded: dict[str, list[tuple]] = {}  # EBMs and rankers: one fit per seed
    for seed in args.seed_list:
        own = {} if args.seed_list == [0] else {"seed": seed}  # the default seed is 0
        tag = f" (seed {seed})" if own else ""
        fits = dict(models)  # the baselines, and this seed's EBMs and rankers
        for name in ebms:
            fits[name] = early_stop_refit(name, ds, dev, thr, own or None)
            print(f"  {name}{tag}: {fits[name][1]:.1f} s ({fits[name][2]})", flush=True)
        for n_var, sets in enumerate(args.variants):
            key = "ranker" if n_var == 0 else f"ranker+{n_var}"
            ranker, fit_s, desc = build_ranker(fits, ds, args, {**own, **sets})
            fits[key] = (ranker, fit_s, desc if n_var == 0 else f"{json.dumps(sets)}: {desc}")
            valid = ranker.fit_info.get("valid_ndcg_at_10", float("nan"))
            print(
                f"  {key}{tag}: {fit_s:.1f} s ({fits[key][2]}; valid NDCG@10 {valid:.4f})",
                flush=True,
            )
        for key, fit in fits.items():
            if key not in models:  # the baselines are scored once, above
                model = None if key in seeded else fit[0]  # keep the first seed's model
                seeded.setdefault(key, []).append((model, *fit[1:3], per_user(fit[0], ds)))
    for key, runs in seeded.items():  # per-user metrics averaged over seeds; mean fit time
        scores[key] = {m: np.mean([r[3][m] for r in runs], axis=0) for m in runs[0][3]}
        desc = runs[0][2]
        if len(runs) > 1:  # each seed's own figure, then its choices
            per = " / ".join(f"{np.nanmean(r[3]['ndcg@10']):.4f}" for r in runs)
            desc = f"NDCG@10 per seed {per}; " + " | ".join(r[2] for r in runs)
        models[key] = (runs[0][0], float(np.mean([r[1] for r in runs])), desc)
    r = scores["ranker"]["ndcg@10"]
    print(
        f"\n{'model':<12}{'NDCG@10':>9}{'Recall@20':>11}{'fit s':>8}  "
        f"{'ranker-model':>13}{'t-test p':>10}{'Wilcoxon p':>12}   chosen on valid"
    )
    rows = []
    for name, (_, fit_s, params, *_) in models.items():
        s = scores[name]
        row = {
            "dataset": label,
            "model": name,
            "ndcg@10": float(np.nanmean(s["ndcg@10"])),
            "recall@20": float(np.nanmean(s["recall@20"])),
            "fit_s": fit_s,
            "params": params,
            "seeds": args.seed_list if name in seeded else None,
            "ndcg@10_per_seed": [float(np.nanmean(r[3]["ndcg@10"])) for r in seeded[name]]
            if name in seeded
            else None,
        }
        line = f"{name:<12}{row['ndcg@10']:>9.4f}{row['recall@20']:>11.4f}{fit_s:>8.1f}  "
        if name != "ranker":
            t = paired_test(r, s["ndcg@10"])
            row.update(diff=t["mean_diff"], t_p=t["t_pvalue"], wilcoxon_p=t["wilcoxon_pvalue"])
            line += f"{t['mean_diff']:>+13.4f}{t['t_pvalue']:>10.2g}{t['wilcoxon_pvalue']:>12.2g}"
        else:
            line += f"{'':>35}"
        print(f"{line}   {params}", flush=True)
        rows.append(row)
    return rows


def targets(rows: list[dict]) -> bool:
    """Print the TARGETS block; True when every target holds."""
    print("\nTARGETS (issue 12; NDCG@10 on test, per dataset)")
    ok_all = True
    for label in dict.fromkeys(r["dataset"] for r in rows):
        got = {r["model"]: r for r in rows if r["dataset"] == label}
        ease = got["ease"]["ndcg@10"]
        checks = [
            ("rbm >= EASE", "rbm", ease),
            ("retriever >= EASE", "retriever", ease),
            (f"ranker >= {TARGET_RANKER:g} x EASE", "ranker", TARGET_RANKER * ease),
        ]
        for what, name, bar in checks:
            if name not in got:
                continue
            v = got[name]["ndcg@10"]
            ok = v >= bar
            ok_all &= ok
            extra = ""
            if name == "ranker":
                extra = (
                    f"; ranker - EASE {got['ease']['diff']:+.4f}, t-test p "
                    f"{got['ease']['t_p']:.2g}, Wilcoxon p {got['ease']['wilcoxon_p']:.2g}"
                )
            print(
                f"  {label:<20} {what:<22} {'PASS' if ok else 'FAIL'}  "
                f"{v:.4f} vs {bar:.4f} ({v / ease:.3f} x EASE{extra})"
            )
    print("ALL TARGETS PASS" if ok_all else "NOT ALL TARGETS PASS (FAIL rows above)")
    return ok_all


def seed_list(ap: argparse.ArgumentParser, text: str) -> list[int]:
    """``--seeds`` as ints; ``ap.error`` (exit 2) when it is not comma-separated integers."""
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        ap.error(f"--seeds: expected comma-separated integers, got {text!r}")


def ranker_variants(ap: argparse.ArgumentParser, args: argparse.Namespace) -> list[dict]:
    """The rankers' RankerConfig overrides: ``--ranker-set``, then it updated by each entry of
    ``--also-ranker``. ``ap.error`` (exit 2, no traceback) on bad JSON or an unknown or invalid
    field, before any data is read (not after the single models' fits)."""
    from recsys_ebm.ranking import RankerConfig

    def parse(flag: str, text: str, want: type) -> Any:
        kind = "object" if want is dict else "list"
        try:
            got = json.loads(text)
        except json.JSONDecodeError as e:
            ap.error(f"{flag}: expected a JSON {kind}, got {text!r} ({e})")
        if not isinstance(got, want):
            ap.error(f"{flag}: expected a JSON {kind}, got {text!r}")
        return got

    base = parse("--ranker-set", args.ranker_set, dict)
    extra = parse("--also-ranker", args.also_ranker, list)
    if bad := [v for v in extra if not isinstance(v, dict)]:
        ap.error(f"--also-ranker: expected a JSON list of objects, got entries {bad}")
    variants = [base] + [{**base, **v} for v in extra]
    for n_var, sets in enumerate(variants):
        flag = "--ranker-set" if n_var == 0 else f"--also-ranker (entry {n_var})"
        if not isinstance(sets.get("component_config", {}), dict):
            ap.error(f"{flag}: component_config: expected an object, got {sets!r}")
        try:
            RankerConfig.from_dict(merge_component_config(sets))
        except (ValueError, TypeError) as e:  # ConfigError is a ValueError
            ap.error(f"{flag}: {e}")
    return variants


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--datasets",
        default=",".join(DATASETS),
        help="comma-separated subset of " + ", ".join(DATASETS),
    )
    ap.add_argument("--ml100k", default=str(DATASETS["ml-100k"]), help="MovieLens 100K directory")
    ap.add_argument("--threads", type=int, default=2, help="torch and implicit threads")
    ap.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    ap.add_argument("--bpr", action="store_true", help="also implicit's BPR (slow)")
    ap.add_argument("--softmax-rbm", action="store_true", help="also the softmax RBM (ratings)")
    ap.add_argument("--components", default=None, help="the ranker's components (default: its own)")
    ap.add_argument(
        "--ranker",
        choices=("reuse", "fit"),
        default="reuse",
        help="reuse: the default ranker built from the single models' own fits (the same fits "
        "Ranker().fit_dataset makes; half the time); fit: Ranker().fit_dataset from scratch",
    )
    ap.add_argument(
        "--ranker-set",
        default="{}",
        help='JSON overrides of RankerConfig, e.g. \'{"component_config": {"ease": '
        '{"dropout": 0.5}}}\' (merged into the default component_config)',
    )
    ap.add_argument(
        "--also-ranker",
        default="[]",
        help='JSON list of further RankerConfig overrides, each an extra row "ranker+N" built '
        'from the same fits, e.g. \'[{"weight_fit": "equal"}]\' (the targets use "ranker")',
    )
    ap.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds of the EBMs and the ranker (--ranker reuse): one fit per "
        "seed, per-user NDCG@10 / Recall@20 averaged over them before the paired tests",
    )
    ap.add_argument("--json", default=None, help="also write every row to this JSON file")
    ap.add_argument(
        "--on-valid",
        action="store_true",
        help="run the whole benchmark on the validation split (test never read): train split "
        "again per user, 1/8 as inner validation; the outer validation split plays test",
    )
    args = ap.parse_args(argv)
    names = dataset_names(ap, args.datasets)
    if args.threads < 1:
        ap.error(f"--threads: expected a positive int, got {args.threads}")
    args.variants = ranker_variants(ap, args)
    args.seed_list = seed_list(ap, args.seeds)
    if len(set(args.seed_list)) != len(args.seed_list):
        ap.error(f"--seeds: expected distinct seeds, got {args.seeds!r}")
    if args.seed_list != [0] and args.ranker != "reuse":
        ap.error(
            f"--seeds: expected --ranker reuse with seeds other than 0, got --ranker {args.ranker}"
        )

    import torch

    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.device import resolve_device

    torch.set_num_threads(args.threads)
    args.device = str(resolve_device(args.device))
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else "no GPU"
    print(f"device {args.device} ({gpu}), {args.threads} threads, torch {torch.__version__}")
    t_all = time.perf_counter()
    rows: list[dict] = []
    for name in names:
        if (path := dataset_path(name, args.ml100k)) is not None:
            ds = prepare_dataset(path, **SPLIT)
            if args.on_valid:
                ds = validation_replica(ds)
                name = f"{name} (on valid)"
            rows += run_dataset(name, ds, args)
    if not rows:
        return 0
    targets(rows)
    print(f"total {time.perf_counter() - t_all:.0f} s")
    if args.json:
        from recsys_ebm.io import atomic_file

        with atomic_file(args.json) as tmp:
            tmp.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
