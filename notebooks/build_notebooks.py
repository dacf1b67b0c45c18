"""Writes the analyst notebooks from the cell sources below: python notebooks/build_notebooks.py

Keeping the sources here makes notebook diffs readable; the .ipynb files are what analysts open.
Each notebook's first code cell is tagged ``parameters`` (papermill convention) so the dataset
size can be raised outside CI; tests/test_notebooks.py executes every notebook top to bottom.
"""

from __future__ import annotations

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


def build() -> None:
    for name, cells in NOTEBOOKS.items():
        nb = nbf.v4.new_notebook()
        nb.metadata["kernelspec"] = {
            "name": "python3",
            "display_name": "Python 3",
            "language": "python",
        }
        for kind, src in cells:
            if kind == "md":
                nb.cells.append(nbf.v4.new_markdown_cell(src))
            else:
                cell = nbf.v4.new_code_cell(src)
                if kind == "params":
                    cell.metadata["tags"] = ["parameters"]
                nb.cells.append(cell)
        nbf.write(nb, HERE / name)


if __name__ == "__main__":
    build()
