"""The EBMs tuned per dataset by the validation grid search a user runs (issue 12: "a validation
search that the user can run ... is reported separately" from the defaults).

    python benchmarks/search.py [--datasets ml-100k,ml-latest-small,movietweetings-100k]
        [--ml100k PATH] [--threads 2] [--models rbm,retriever] [--grid JSON] [--seeds 0,1,2]
        [--json OUT]

Per dataset, the benchmark's split and protocol (``quality.py``): EASE with its L2 chosen on
validation and refitted on train + valid; then, per EBM, the library's search
(:func:`recsys_ebm.models.search.grid_search`, what ``recsys-ebm train --search`` runs): every
point of the grid fitted on train, early-stopped on validation, and scored by validation NDCG@10.
The chosen point and the default point (the grid holds the defaults) are each refitted on train
+ valid for their best epoch count, and their test NDCG@10 is printed with the ratio to EASE.
Test is read only to report the two refits; nothing is chosen on it.

``--seeds 0,1,2`` runs the search as ``train --search-seeds 0,1,2`` does (every point fitted once
per seed, scored by the mean validation NDCG@10) and reports each test figure as the mean of the
refits over the same seeds: one seed's validation figure carries that seed's luck, which the
refit does not keep.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as q  # noqa: E402

#: the default grids: each holds its model's defaults (RBM: n_hidden 200, learning_rate 0.05;
#: retriever: temperature 0.2, embedding_size 128)
GRIDS = {
    "rbm": {"n_hidden": [100, 200, 400], "learning_rate": [0.02, 0.05, 0.1]},
    "retriever": {"temperature": [0.1, 0.2, 0.3], "embedding_size": [64, 128, 256]},
}


def refit(model, ds) -> tuple[float, int | None]:
    """Test NDCG@10 of ``model``'s config refitted on train + valid for its best epoch count."""
    from recsys_ebm.ranking._ranker_data import merge_valid
    from recsys_ebm.ranking._refit import best_epoch

    ep = best_epoch(model)
    final = model
    if ep is not None:
        config = model.config.replace(epochs=ep + 1, patience=0)
        final = type(model)(config).fit_dataset(merge_valid(ds))
    return float(np.nanmean(q.per_user(final, ds)["ndcg@10"])), ep


def seeded_test(models: list, ds) -> float:
    """Mean test NDCG@10 of the refits of ``models`` (one point's early-stopped fits, one per
    seed)."""
    return float(np.mean([refit(m, ds)[0] for m in models]))


def run(label: str, path: Path, args: argparse.Namespace) -> list[dict]:
    from recsys_ebm.data.prepare import prepare_dataset
    from recsys_ebm.models import get_model_class
    from recsys_ebm.models.search import grid_points, grid_search

    ds = prepare_dataset(path, **q.SPLIT)
    ease = q.select_refit("ease", q.EASE_GRID, ds, args.device, args.threads)[0]
    ease_test = float(np.nanmean(q.per_user(ease, ds)["ndcg@10"]))
    print(f"\n== {label}: EASE test NDCG@10 {ease_test:.4f}", flush=True)
    rows = []
    for name in args.models.split(","):
        cls = get_model_class(name)
        base = cls.config_class(device=args.device, progress=False)
        grid = args.grids[name]

        def keep(i: int, row: dict, model: object, grid=grid, name=name) -> None:
            point = ", ".join(f"{k} {row[k]}" for k in grid)
            per = row.get("valid_ndcg@10_per_seed")
            each = f" = mean of {' / '.join(f'{v:.4f}' for v in per)}" if per else ""
            print(
                f"  {name} {point}: valid {row['valid_ndcg@10']:.4f}{each} "
                f"({row['fit_seconds']:.0f} s)",
                flush=True,
            )

        every: dict[int, list] = {}  # point -> its fits, one per seed (for the refits)

        def each(i: int, seed: int | None, model: object, score: float, every=every) -> None:
            every.setdefault(i, []).append(model)

        t0 = time.perf_counter()
        result = grid_search(cls, base, grid, ds, seeds=args.seed_list, on_point=keep, on_fit=each)
        seconds = time.perf_counter() - t0
        scores = [r["valid_ndcg@10"] for r in result.table]
        points = grid_points(grid)
        default_i = next(  # the point that holds the defaults (refitted too), if the grid has it
            (i for i, p in enumerate(points) if all(p[k] == getattr(base, k) for k in grid)), None
        )
        # test: the chosen point refitted (and the default one), over the same seeds
        chosen_i = points.index(result.best)
        searched_test = seeded_test(every[chosen_i], ds)
        row = {
            "dataset": label,
            "model": name,
            "grid": grid,
            "seeds": args.seed_list,
            "best": result.best,
            "valid_best": max(scores),
            "test_searched": searched_test,
            "ease_test": ease_test,
            "search_seconds": seconds,
            "table": result.table,
        }
        if default_i is not None:
            row["valid_default"] = scores[default_i]
            same = default_i == chosen_i
            row["test_default"] = searched_test if same else seeded_test(every[default_i], ds)
        line = f"  {name}: chose {result.best} (valid {max(scores):.4f}"
        if "valid_default" in row:
            line += f", default {row['valid_default']:.4f}); test default {row['test_default']:.4f}"
            line += f" ({row['test_default'] / ease_test:.3f}x EASE)"
        else:
            line += ")"
        line += f", searched {searched_test:.4f} ({searched_test / ease_test:.3f}x EASE)"
        print(f"{line}; search {seconds:.0f} s", flush=True)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default=",".join(q.DATASETS), help="comma-separated")
    ap.add_argument("--ml100k", default=str(q.DATASETS["ml-100k"]), help="MovieLens 100K directory")
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--models", default="rbm,retriever", help="EBMs to search (registry names)")
    ap.add_argument("--grid", default="{}", help="JSON {model: {field: [values]}} over GRIDS")
    ap.add_argument(
        "--seeds",
        default=None,
        help="search with these seeds (each point scored by the mean over them, as train "
        "--search-seeds) and report test as the mean of the refits over them",
    )
    ap.add_argument("--json", default=None, help="write the rows here")
    args = ap.parse_args(argv)
    try:
        sets = json.loads(args.grid)
    except json.JSONDecodeError as e:
        ap.error(f"--grid: expected JSON {{model: {{field: [values]}}}}, got {args.grid!r} ({e})")
    args.grids = {**GRIDS, **sets}
    args.seed_list = None if args.seeds is None else q.seed_list(ap, args.seeds)
    if missing := [m for m in args.models.split(",") if m not in args.grids]:
        ap.error(f"--models: expected models with a grid ({sorted(args.grids)}), got {missing}")
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for name in q.dataset_names(ap, args.datasets):
        path = q.dataset_path(name, args.ml100k)
        if path is not None:
            rows += run(name, path, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
