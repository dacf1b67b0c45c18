"""Every model config refuses NaN/inf floats and out-of-range values at construction (NaN once
passed every ``value <= 0`` check: ``learning_rate=nan`` and ``l2_grid=[nan]`` trained models of
NaNs, and ALS ``regularization=-100`` was accepted)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from recsys_ebm.config import Config
from recsys_ebm.diagnostics import ConfigError
from recsys_ebm.models import MODEL_PATHS, get_model_class


def _float_fields() -> list[tuple[str, str]]:
    out = []
    for name in sorted(MODEL_PATHS):
        cls = get_model_class(name).config_class
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if hints[f.name] is float or hints[f.name] == tuple[float, ...]:
                out.append((name, f.name))
    return out


FLOAT_FIELDS = _float_fields()


def test_every_model_has_float_fields_checked():
    assert {m for m, _ in FLOAT_FIELDS} >= {"rbm", "softmax-rbm", "retriever", "ease", "als", "bpr"}


@pytest.mark.parametrize(("model", "field"), FLOAT_FIELDS)
@pytest.mark.parametrize("bad", ["nan", "inf", "-inf"])
def test_non_finite_floats_are_refused_naming_the_field(model, field, bad):
    cls = get_model_class(model).config_class
    value = float(bad)
    default = getattr(cls(), field)
    value = (value,) if isinstance(default, tuple) else value
    with pytest.raises(ConfigError, match=rf"{cls.__name__}\.{field}: expected a finite number"):
        cls.from_dict({field: value})


@pytest.mark.parametrize(
    ("model", "overrides", "message"),
    [
        ("als", ["regularization=-100"], r"ALSConfig\.regularization: expected >= 0, got -100"),
        ("bpr", ["regularization=-1"], r"BPRConfig\.regularization: expected >= 0"),
        ("bpr", ["learning_rate=0"], r"BPRConfig\.learning_rate: expected > 0"),
        ("als", ["num_threads=-2"], r"ALSConfig\.num_threads: expected >= 0"),
        ("ease", ["l2_grid=[nan]"], r"EASEConfig\.l2_grid: expected a finite number"),
        ("ease", ["l2_grid=[100, -1]"], r"EASEConfig\.l2_grid: expected positive values"),
        ("rbm", ["learning_rate=nan"], r"RBMConfig\.learning_rate: expected a finite number"),
        ("rbm", ["lr_decay=0"], r"RBMConfig\.lr_decay: expected > 0"),
        ("rbm", ["max_abs_param=0"], r"RBMConfig\.max_abs_param: expected > 0"),
        ("softmax-rbm", ["patience=-1"], r"SoftmaxRBMConfig\.patience: expected >= 0"),
        ("retriever", ["max_abs_param=-1"], r"RetrieverConfig\.max_abs_param: expected > 0"),
        ("retriever", ["popularity_alpha=-1"], r"RetrieverConfig\.popularity_alpha"),
        ("retriever", ["seed=-3"], r"RetrieverConfig\.seed: expected >= 0"),
    ],
)
def test_ranges_from_overrides(model, overrides, message):
    with pytest.raises(ConfigError, match=message):
        get_model_class(model).config_class.from_sources(None, overrides)


def test_finite_check_covers_subclasses_without_their_own_rules():
    @dataclasses.dataclass(frozen=True)
    class Tiny(Config):
        x: float = 1.0

    assert Tiny(x=2.0).x == 2.0
    with pytest.raises(ConfigError, match=r"Tiny\.x: expected a finite number, got nan"):
        Tiny(x=float("nan"))
