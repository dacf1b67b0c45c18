"""Builders of the shared artifacts (datasets, models) that the bad-input cases use."""

from __future__ import annotations

from pathlib import Path

from tests.cli_cases import World


def log_csv(w: World) -> Path:
    """A small interaction log (user_id,item_id,rating,timestamp) with planted structure."""

    def build(w: World) -> Path:
        from recsys_ebm.data.synthetic import planted_communities

        log = planted_communities(n_users=120, n_items=60, n_interactions=3000, seed=1)
        p = w.dir("logs") / "log.csv"
        log.drop("community").write_csv(p)
        return p

    return w.get("log_csv", build)


def dataset(w: World) -> Path:
    """A prepared dataset directory of :func:`log_csv`."""

    def build(w: World) -> Path:
        from recsys_ebm.data.prepare import prepare_dataset

        out = w.root / "data"
        prepare_dataset(log_csv(w), seed=0).save(out)
        return out

    return w.get("dataset", build)


def popularity_model(w: World) -> Path:
    """A popularity model trained on :func:`dataset`."""

    def build(w: World) -> Path:
        from recsys_ebm.data.dataset import Dataset
        from recsys_ebm.models.popularity import Popularity

        ds = Dataset.load(dataset(w))
        m = Popularity().fit(ds.train)
        m.item_ids = ds.item_ids
        out = w.root / "model-popularity"
        m.save(out)
        return out

    return w.get("popularity_model", build)
