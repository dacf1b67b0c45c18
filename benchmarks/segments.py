"""Where the EBMs lose to EASE: NDCG@10 per history-length quartile, one split back (issue 12).

    python benchmarks/segments.py [--datasets ml-100k,ml-latest-small,movietweetings-100k]
        [--ml100k PATH] [--threads 1] [--seeds 0,1] [--models rbm,retriever] [--set JSON]

Validation only: the benchmark's validation replica (``quality.validation_replica``: each user's
training pairs split again, 1/8 inner validation; the outer validation split plays test), so
that what it shows can steer a change without reading test. EASE has its L2 chosen on the
inner validation split and refitted (``quality.replica_with_ease``); each EBM runs with its
defaults, early-stopped on the inner validation split and refitted for its best epoch count
(``quality.early_stop_refit``), once per seed; its per-user NDCG@10 is the mean over seeds.
``--set '{"rbm": {"lateral": "dlae", ...}}'`` overrides a model's defaults. ``dlae`` in
``--models`` adds DLAE (EASE with input dropout 0.5, its L2 chosen as EASE's is).

The users scored (a validation target and a history) are cut into four groups by the quartiles
of their history length (the history that scores them: the outer train split). Per group: the
users, NDCG@10 of EASE and of each EBM, and the EBM's ratio to EASE; the last line is all users.
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


def segment_table(lengths: np.ndarray, scores: dict[str, np.ndarray]) -> list[dict]:
    """Rows of the table: per history-length quartile (and all users), each model's mean NDCG@10
    and, for every model but EASE, its ratio to EASE's."""
    edges = np.quantile(lengths, [0.0, 0.25, 0.5, 0.75, 1.0])
    groups = []
    for g in range(4):
        lo, hi = edges[g], edges[g + 1]
        sel = (lengths >= lo) & ((lengths < hi) if g < 3 else (lengths <= hi))
        groups.append((f"{lo:.0f}-{hi:.0f}", sel))
    groups.append(("all", np.ones(len(lengths), dtype=bool)))
    rows = []
    for label, sel in groups:
        row = {"history": label, "users": int(sel.sum())}
        for name, s in scores.items():
            row[name] = float(np.nanmean(s[sel])) if sel.any() else float("nan")
        for name in scores:
            if name != "ease":
                row[f"{name}/ease"] = row[name] / row["ease"] if row["ease"] else float("nan")
        rows.append(row)
    return rows


def run(label: str, path: Path, args: argparse.Namespace) -> list[dict]:
    t0 = time.perf_counter()
    ds, hist, ease, _, ease_ndcg = q.replica_with_ease(path, args.threads)
    # per-user NDCG@10 of the users the protocol scores (quality.per_user: ds.eval_users, the
    # outer validation split ranked from the outer train split, masked)
    scores = {"ease": q.per_user(ease, ds)["ndcg@10"]}
    for name in args.models.split(","):
        if name == "dlae":  # a baseline: no seed, its L2 searched as EASE's
            grid = [{**g, "dropout": 0.5} for g in q.EASE_GRID]
            dlae = q.select_refit("dlae", grid, ds, args.device, args.threads)[0]
            scores[name] = q.per_user(dlae, ds)["ndcg@10"]
            continue
        runs = []
        for seed in args.seed_list:
            params = {**args.sets.get(name, {}), "seed": seed}
            model = q.early_stop_refit(name, ds, args.device, args.threads, params)[0]
            runs.append(q.per_user(model, ds)["ndcg@10"])
        scores[name] = np.mean(runs, axis=0)
    rows = ds.eval_users("test")
    table = segment_table(np.diff(hist.indptr)[rows], scores)
    print(
        f"\n== {label} (validation replica; {time.perf_counter() - t0:.0f} s; EASE {ease_ndcg:.4f})"
    )
    names = list(scores)
    head = f"{'history':>10}{'users':>7}" + "".join(f"{n:>11}" for n in names)
    head += "".join(f"{n + '/EASE':>15}" for n in names[1:])
    print(head)
    for r in table:
        line = f"{r['history']:>10}{r['users']:>7}" + "".join(f"{r[n]:>11.4f}" for n in names)
        line += "".join(f"{r[n + '/ease']:>15.3f}" for n in names[1:])
        print(line, flush=True)
    return table


def check_args(ap: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """``ap.error`` (exit 2, no traceback) on a bad ``--set``, ``--models`` or ``--seeds``,
    before any data is read: every model's config is built from its overrides once. Leaves the
    parsed ``args.seed_list`` and ``args.sets`` for :func:`run`."""
    from recsys_ebm.models import get_model_class

    try:
        sets = json.loads(args.set)
    except json.JSONDecodeError as e:
        ap.error(f"--set: expected JSON {{model: {{field: value}}}}, got {args.set!r} ({e})")
    if not isinstance(sets, dict) or not all(isinstance(v, dict) for v in sets.values()):
        ap.error(f"--set: expected JSON {{model: {{field: value}}}}, got {args.set!r}")
    models = args.models.split(",")
    if extra := sorted(set(sets) - set(models)):
        ap.error(f"--set: expected models named in --models {models}, got {extra}")
    args.seed_list, args.sets = q.seed_list(ap, args.seeds), sets  # as run() reads them
    for name in models:
        if name == "dlae":
            continue
        try:
            get_model_class(name).config_class.from_dict(sets.get(name, {}))
        except (ValueError, TypeError) as e:  # an unknown model; ConfigError is a ValueError
            ap.error(f"--models/--set: {e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", default=",".join(q.DATASETS), help="comma-separated")
    ap.add_argument("--ml100k", default=str(q.DATASETS["ml-100k"]), help="MovieLens 100K directory")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    ap.add_argument("--seeds", default="0", help="EBM seeds; per-user NDCG@10 averaged over them")
    ap.add_argument(
        "--models", default="rbm,retriever", help="EBMs (registry names), and dlae (a baseline)"
    )
    ap.add_argument("--set", default="{}", help="JSON {model: {field: value}} over the defaults")
    args = ap.parse_args(argv)
    check_args(ap, args)
    import torch

    torch.set_num_threads(args.threads)
    for name in q.dataset_names(ap, args.datasets):
        path = q.dataset_path(name, args.ml100k)
        if path is None:  # dataset_path printed the [skip] line
            continue
        run(name, path, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
