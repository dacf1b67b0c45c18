"""Model registry: register a trained model as a pyfunc version and promote a champion.

``register_model`` takes the MLflow run of a ``recsys-ebm train`` (or a model directory, whose
latest train run is looked up by its ``model_dir`` tag), logs the model directory into that run
as a pyfunc model (:mod:`recsys_ebm.serving`; known users' histories come from the run's dataset,
``history("test")``, when the dataset directory is still there), and registers it under a name.

Promotion (``promote_if_better=METRIC``): the ``champion`` alias moves to the new version only if
it beats the current champion on METRIC **on the same dataset fingerprint**. The metric of a
version is read, in order, from

1. the latest ``evaluate`` run that scored that model directory on that dataset (child runs tagged
   ``stage=evaluate-model``, ``model_dir``, ``dataset.fingerprint``; logged by
   ``recsys-ebm evaluate``, test split) - the preferred source;
2. the train run's own metric of that name (e.g. a validation figure it logged).

A version without the metric cannot be promoted (error). With no champion yet, the first version
with the metric becomes champion. A champion on another dataset fingerprint is not comparable: it
is kept, and the reason is reported. Ties keep the champion. The figure, its source and the
fingerprint are stored as tags on each version.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys_ebm.tracking import DEFAULT_EXPERIMENT, default_tracking_uri, metric_key

__all__ = ["CHAMPION", "RegisterResult", "metric_for_run", "register_model", "resolve_model_uri"]

CHAMPION = "champion"


@dataclass
class RegisterResult:
    name: str
    version: str
    run_id: str
    model_uri: str
    promoted: bool
    reason: str
    metric: float | None = None


def _client(tracking_uri: str | None) -> Any:
    import mlflow
    from mlflow import MlflowClient

    uri = default_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, registry_uri=uri)


def _find_train_run(client: Any, model_dir: Path, experiment: str) -> Any:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.stage = 'train' and tags.model_dir = '{model_dir.resolve()}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def metric_for_run(client: Any, run: Any, metric: str) -> tuple[float | None, str]:
    """The run's model's ``metric`` and where it came from (see the module docstring)."""
    key = metric_key(metric)
    model_dir = run.data.tags.get("model_dir")
    fp = run.data.tags.get("dataset.fingerprint")
    if model_dir and fp:
        found = client.search_runs(
            [run.info.experiment_id],
            filter_string=(
                f"tags.stage = 'evaluate-model' and tags.model_dir = '{model_dir}' "
                f"and tags.`dataset.fingerprint` = '{fp}'"
            ),
            order_by=["attributes.start_time DESC"],
        )
        for ev in found:
            if key in ev.data.metrics:
                return float(ev.data.metrics[key]), f"evaluate run {ev.info.run_id}"
    if key in run.data.metrics:
        return float(run.data.metrics[key]), f"run {run.info.run_id}"
    return None, "none"


def register_model(
    name: str,
    *,
    run_id: str | None = None,
    model_dir: str | Path | None = None,
    promote_if_better: str | None = None,
    lower_is_better: bool = False,
    tracking_uri: str | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
) -> RegisterResult:
    """Log the run's model as pyfunc, register a new version of ``name``, maybe promote it.

    Raises:
        ValueError: neither/both of ``run_id`` and ``model_dir``; no train run for ``model_dir``;
            ``promote_if_better`` given but the new version has no such metric.
    """
    import mlflow

    from recsys_ebm.serving import log_pyfunc_model

    if (run_id is None) == (model_dir is None):
        raise ValueError("register: expected exactly one of --run RUN_ID and --model-dir DIR")
    if not name:
        raise ValueError("--name: expected a registered model name, got an empty string")
    client = _client(tracking_uri)
    if run_id is not None:
        run = client.get_run(run_id)
    else:
        run = _find_train_run(client, Path(model_dir), experiment)
        if run is None:
            raise ValueError(
                f"--model-dir: no train run in experiment {experiment!r} tagged model_dir="
                f"{Path(model_dir).resolve()}; train it with MLflow on, or pass --run"
            )
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(run.data.tags.get("model_dir", ""))
        if not (local / "model.json").is_file():
            local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=tmp))
        dataset = _run_dataset(run)
        # nested: `recsys-ebm run` calls this inside its pipeline parent run
        with mlflow.start_run(run_id=run_id, nested=True):
            info = log_pyfunc_model(local, dataset=dataset)
    fp = run.data.tags.get("dataset.fingerprint", "")
    tags = {"run_id": run_id, "dataset.fingerprint": fp}
    value, source = (None, "none")
    if promote_if_better:
        value, source = metric_for_run(client, run, promote_if_better)
        if value is None:
            raise ValueError(
                f"--promote-if-better: run {run_id} has no metric {metric_key(promote_if_better)!r}"
                " and no evaluate run scored its model; run `recsys-ebm evaluate` first"
            )
        tags[f"metric.{metric_key(promote_if_better)}"] = repr(value)
        tags["metric_source"] = source
    mv = mlflow.register_model(info.model_uri, name, tags=tags)
    promoted, reason = False, "no --promote-if-better: champion alias untouched"
    if promote_if_better:
        promoted, reason = _maybe_promote(
            client, name, mv, value, fp, promote_if_better, lower_is_better
        )
    return RegisterResult(name, str(mv.version), run_id, info.model_uri, promoted, reason, value)


def _maybe_promote(
    client: Any, name: str, mv: Any, value: float, fp: str, metric: str, lower: bool
) -> tuple[bool, str]:
    from mlflow.exceptions import MlflowException

    key = metric_key(metric)
    try:
        champ = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        champ = None
    if champ is None:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
        return True, f"no champion yet: version {mv.version} ({key}={value:.6g}) is champion"
    champ_fp = champ.tags.get("dataset.fingerprint", "")
    if champ_fp != fp:
        return False, (
            f"champion version {champ.version} was scored on dataset {champ_fp or '?'}, this "
            f"version on {fp or '?'}: not comparable, champion kept"
        )
    if f"metric.{key}" in champ.tags:
        best = float(champ.tags[f"metric.{key}"])
    else:
        best, _ = metric_for_run(
            client, client.get_run(champ.tags.get("run_id") or champ.run_id), key
        )
    if best is None:
        return False, f"champion version {champ.version} has no {key}: champion kept"
    better = value < best if lower else value > best
    if better:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
        return True, f"{key} {value:.6g} beats champion v{champ.version}'s {best:.6g}: promoted"
    return False, f"{key} {value:.6g} does not beat champion v{champ.version}'s {best:.6g}: kept"


def _run_dataset(run: Any) -> Any:
    """The run's prepared dataset when its directory is still there (for served histories)."""
    from recsys_ebm.data.dataset import Dataset

    path = run.data.params.get("dataset.path")
    if not path or not (Path(path) / "manifest.json").is_file():
        return None
    ds = Dataset.load(path)
    want = run.data.tags.get("dataset.fingerprint")
    return ds if not want or ds.fingerprint == want else None


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> (NAME, ALIAS, None); ``models:/NAME/VERSION`` -> (NAME, None,
    VERSION).

    Raises:
        ValueError: ``uri`` is neither form.
    """
    ref = uri[len("models:/") :] if uri.startswith("models:/") else ""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, alias, None
    if "/" in ref:
        name, version = ref.rsplit("/", 1)
        return name, None, version
    raise ValueError(f"--model: expected models:/NAME@ALIAS or models:/NAME/VERSION, got {uri}")


def resolve_model_uri(uri: str, tracking_uri: str | None, dst: str | Path) -> tuple[Path, str]:
    """``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) -> (local model dir, version label).

    Downloads the registered pyfunc model and returns the saved Recommender directory inside its
    bundle, and a label ``NAME/vVERSION`` for the output's ``model_version`` column.
    """
    import mlflow

    name, alias, version = parse_model_uri(uri)
    if alias is not None:
        version = _client(tracking_uri).get_model_version_by_alias(name, alias).version
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(dst))
    )
    model_dir = local / "artifacts" / "bundle" / "model"
    if not (model_dir / "model.json").is_file():
        raise ValueError(f"--model: {uri} is not a recsys-ebm pyfunc model (no bundle/model)")
    return model_dir, f"{name}/v{version}"
