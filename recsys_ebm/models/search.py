"""A validation grid search over a model's config: what a user runs to tune a model on their own
data (``recsys-ebm train --search KEY=[V1,V2]``, a pipeline stage's ``search`` table).

Every point of the grid (the Cartesian product of the listed values, over the base config) is
fitted on the train split as ``train`` fits it (early stopping on the validation split where
the model has it) and scored by NDCG@10 on the validation split, ranked from the train split
with the history masked: the metric the iterative models early-stop on. The best point's model
is kept (ties go to the earlier point). The test split is never read. With ``seeds`` every point
is fitted once per seed and scored by the mean over them (``--search-seeds``): one seed's best
point is partly that seed's luck (benchmarks/README.md, "The EBMs tuned per dataset").

The defaults of the library are chosen the same way, but once, on the benchmark datasets, and
hold for every dataset; a search picks per dataset. Each point refits from scratch, so a grid of
n points costs about n fits. For the ranker the score is measured on the validation users its
blend weights were fitted on, so it is optimistic; the component models are better searched in
their own stages.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from recsys_ebm.diagnostics import ConfigError

__all__ = [
    "SearchResult",
    "grid_configs",
    "grid_points",
    "grid_search",
    "parse_grid",
    "parse_seeds",
]

#: the validation metric a search maximises
METRIC = "ndcg@10"


def parse_grid(pairs: list[str] | tuple[str, ...], config_class: Any) -> dict[str, list[Any]]:
    """``["n_hidden=[100, 200]", ...]`` -> ``{"n_hidden": [100, 200], ...}``.

    Each value is a TOML array of one or more values of a field of ``config_class``.

    Raises:
        ConfigError: not ``KEY=[...]``, an empty or non-array value, a key given twice, or a key
            that is not a config field; the message names ``search``.
    """
    import tomllib

    known = set(config_class.__dataclass_fields__)
    grid: dict[str, list[Any]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"search: expected KEY=[V1, V2, ...], got {pair!r}")
        try:
            values = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            values = None
        if not isinstance(values, list) or not values:
            raise ConfigError(
                f"search: expected {key}=[V1, V2, ...] (a non-empty TOML array), got {raw!r}"
            )
        if key not in known:
            raise ConfigError(
                f"search: expected a field of {config_class.__name__} "
                f"({', '.join(sorted(known))}), got {key!r}"
            )
        if key in grid:
            raise ConfigError(f"search: expected each key once, got {key!r} twice")
        grid[key] = values
    return grid


def parse_seeds(text: str | None, base: Any, grid: dict[str, list[Any]]) -> list[int] | None:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (``search_seeds``), checked against the model's config.

    Raises:
        ConfigError: not distinct integers >= 0, a model without a seed, or ``seed`` in the grid.
    """
    if text is None:
        return None
    try:
        seeds = [int(s) for s in str(text).split(",")]
    except ValueError:
        seeds = []
    _check_seeds(seeds, repr(text), base, grid)
    return seeds


def _check_seeds(seeds: list[int], shown: str, base: Any, grid: dict[str, list[Any]]) -> None:
    """The rules of :func:`parse_seeds` for parsed ``seeds`` (``shown``: the input, in messages)."""
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ConfigError(
            f"search_seeds: expected distinct integers >= 0 separated by commas, e.g. 0,1,2, "
            f"got {shown}"
        )
    if "seed" not in type(base).__dataclass_fields__:
        raise ConfigError(
            f"search_seeds: expected a model with a seed ({type(base).__name__} has none), "
            f"got {shown}"
        )
    if "seed" in grid:
        raise ConfigError("search_seeds: expected no 'seed' key in the --search grid, got one")


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*grid.values())]


def grid_configs(base: Any, grid: dict[str, list[Any]]) -> list[tuple[dict[str, Any], Any]]:
    """``(point, config)`` for every point of ``grid`` over ``base``.

    Raises:
        ConfigError: a point's config is invalid (named with the point's values).
    """
    out = []
    for point in grid_points(grid):
        try:
            out.append((point, base.replace(**point)))
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"search: the point {point}: {exc}") from exc
    return out


@dataclass
class SearchResult:
    """The best point's fitted model and config, and every point's validation score."""

    model: Any
    config: Any
    best: dict[str, Any]
    #: the best point's validation NDCG@10 (the mean over the seeds)
    score: float
    #: one row per point: its values, ``valid_ndcg@10`` (the mean over the seeds, each seed's
    #: in ``valid_ndcg@10_per_seed``) and ``fit_seconds``, in grid order
    table: list[dict[str, Any]] = field(default_factory=list)


def grid_search(
    cls: Any,
    base: Any,
    grid: dict[str, list[Any]],
    dataset: Any,
    *,
    seeds: list[int] | tuple[int, ...] | None = None,
    fit_callback: Callable[[int, dict[str, Any], int | None], Any] | None = None,
    on_point: Callable[[int, dict[str, Any], Any], Any] | None = None,
    on_fit: Callable[[int, int | None, Any, float], Any] | None = None,
) -> SearchResult:
    """Fit ``cls`` at every point of ``grid`` over ``base`` and keep the best on validation.

    Args:
        cls: a :class:`~recsys_ebm.models.base.Recommender` class.
        base: its config; each point replaces the grid's fields.
        grid: ``{field: [values]}`` (:func:`parse_grid`).
        dataset: a prepared :class:`~recsys_ebm.data.dataset.Dataset` with a validation split.
        seeds: fit every point once per seed and score it by the mean validation NDCG@10 over
            the seeds (the kept model is the first seed's fit). One seed moves an EBM's figure
            by up to about 2.5% (benchmarks/README.md), more than many grid steps: a single
            seed's best point is partly that seed's luck, which a refit does not keep. None:
            one fit per point with ``base``'s seed.
        fit_callback: ``f(point_index, point, seed)`` returning the epoch callback of that fit
            (e.g. one MLflow run per point), or None; ``seed`` is None without ``seeds``.
        on_point: called after each point's fits with ``(point_index, row, model)``.
        on_fit: called after every fit with ``(point_index, seed, model, validation NDCG@10)``
            (``seed`` None without ``seeds``): every seed's model, which the search itself
            does not keep.

    Raises:
        ValueError: the dataset has no validation split (nothing to choose on).
        ConfigError: a point's config is invalid, or bad ``seeds`` (:func:`parse_seeds`);
            every point is checked before any fit.
    """
    from recsys_ebm.models.validation import evaluate_ranking

    if dataset.valid is None or dataset.valid.nnz == 0:
        raise ValueError(
            "search: expected a dataset with a validation split (prepare with "
            "valid_fraction > 0), got one without validation interactions"
        )
    if seeds is not None:
        _check_seeds(list(seeds), str(list(seeds)), base, grid)
    points = grid_configs(base, grid)  # a bad value fails before the first fit
    best: SearchResult | None = None
    best_score = float("-inf")
    table: list[dict[str, Any]] = []
    key = f"valid_{METRIC}"
    for i, (point, config) in enumerate(points):
        runs = [(None, config)] if seeds is None else [(s, config.replace(seed=s)) for s in seeds]
        scores, kept, t0 = [], None, time.perf_counter()
        for seed, cfg in runs:
            model = cls(cfg)
            callback = fit_callback(i, point, seed) if fit_callback is not None else None
            model.fit_dataset(dataset, callback=callback)
            scores.append(float(evaluate_ranking(model, dataset.train, dataset.valid)[METRIC]))
            if on_fit is not None:
                on_fit(i, seed, model, scores[-1])
            if kept is None:
                kept = (model, cfg)
            del model
        row = {**point, key: float(sum(scores) / len(scores))}
        if seeds is not None:
            row[f"{key}_per_seed"] = scores
        row["fit_seconds"] = time.perf_counter() - t0
        table.append(row)
        assert kept is not None
        if on_point is not None:
            on_point(i, row, kept[0])
        if best is None or row[key] > best_score:  # NaN (no validation user) never wins
            best, best_score = (
                SearchResult(kept[0], kept[1], dict(point), row[key], table),
                row[key],
            )
        del kept
    assert best is not None  # the grid has at least one point
    return best
