"""Ranker quality on MovieLens 100K: the default ranker against every single model.

    python benchmarks/ranker.py [--ml100k PATH] [--components ease,als,rbm] [--threads 2]

A thin alias of ``benchmarks/quality.py --datasets ml-100k`` (any of its options may follow):
the same protocol (per-user random split 20% test / 10% valid, seed 0; every choice on
validation; every final fit, the early-stopped EBMs' included, on train + valid; full ranking
with the history masked), the same table with the ranker-minus-model paired t-test and
Wilcoxon p-values, and the TARGETS block.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--datasets", "ml-100k", *sys.argv[1:]]))
