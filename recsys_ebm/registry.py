"""Model registry: register a trained model as a pyfunc version and promote a champion.

Each model's weights are stored once in MLflow. A train run records its model directory and a
hash of its contents (tags ``model_dir`` and ``model_version``, :func:`record_trained_model`), not
a copy of the weights. ``register_model`` takes that run (``run_id``, or ``model_dir``: the train
run whose ``model_version`` is the directory's current hash), logs the model **once** into the run
as a pyfunc model (:mod:`recsys_ebm.serving`; known users' histories come from the run's dataset,
``history("test")``, when the dataset directory is still there; run tag ``pyfunc.model_id``), and
creates the registered version from that logged model (``create_model_version``: the version
points at the run's copy, it is not a second one). Registering the run again (another name, or
again) reuses its logged model.

A run registers its own model only: when its directory was retrained or changed since (the hash
differs) and the run has no logged model yet, registration is refused and names the run that
trained the directory's current contents. Runs of older versions that logged the model directory
as an artifact (``model/``) register from that artifact.

Promotion (``promote_if_better=METRIC``): the ``champion`` alias moves to the new version only if
it beats the current champion on METRIC **on the same dataset fingerprint**. The metric of a
version is read, in order, from

1. the latest ``evaluate`` run that scored that model directory on that dataset (child runs tagged
   ``stage=evaluate-model``, ``model_dir``, ``dataset.fingerprint``; logged by
   ``recsys-ebm evaluate``, test split) while it held this run's model: its ``model_version`` tag
   equals the run's, or, untagged, it started after this train run and before the directory's
   next one - the preferred source;
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

from recsys_ebm.tracking import (
    DEFAULT_EXPERIMENT,
    metric_key,
    prepare_store,
    set_mlflow_verbosity,
)

__all__ = [
    "CHAMPION",
    "RegisterResult",
    "metric_for_run",
    "parse_model_uri",
    "record_trained_model",
    "register_model",
    "resolve_model_uri",
    "resolve_version",
]

CHAMPION = "champion"
#: run tag: hash of the trained model directory (:func:`recsys_ebm.batch.model_version`)
MODEL_VERSION_TAG = "model_version"
#: run tag: the id of the pyfunc model logged into the run (its one stored copy)
PYFUNC_TAG = "pyfunc.model_id"


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

    set_mlflow_verbosity()
    uri = prepare_store(tracking_uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(uri, registry_uri=uri)


def _quote(value: str) -> str:
    """A string literal for an MLflow filter string (double quotes when it holds a ')."""
    value = str(value)
    return f'"{value}"' if "'" in value else f"'{value}'"


def _train_runs(client: Any, experiment_ids: list[str], model_dir: str) -> list[Any]:
    """The train runs of ``model_dir`` (resolved path), newest first."""
    return client.search_runs(
        experiment_ids,
        filter_string=f"tags.stage = 'train' and tags.model_dir = {_quote(model_dir)}",
        order_by=["attributes.start_time DESC"],
    )


def record_trained_model(model_dir: str | Path) -> str:
    """Tag the active (train) run with ``model_dir`` and the hash of its contents; returns it.

    Called by ``recsys-ebm train`` after saving the model. The weights are not copied into the
    run: :func:`register_model` logs them once, as the pyfunc model it registers, after checking
    the directory still holds this run's model (the hash).
    """
    import mlflow

    from recsys_ebm.batch import model_version

    model_dir = Path(model_dir)
    version = model_version(model_dir)
    mlflow.set_tags({"model_dir": str(model_dir.resolve()), MODEL_VERSION_TAG: version})
    mlflow.log_artifact(str(model_dir / "model.json"))  # config and fit info, for the UI
    return version


def _find_train_run(client: Any, model_dir: Path, experiment: str) -> Any:
    """The train run whose model ``model_dir`` holds now (module docstring).

    Raises:
        ValueError: no train run of the directory, or none trained its current contents.
    """
    from recsys_ebm.batch import model_version

    resolved = model_dir.resolve()
    exp = client.get_experiment_by_name(experiment)
    runs = _train_runs(client, [exp.experiment_id], str(resolved)) if exp is not None else []
    if not runs:
        raise ValueError(
            f"model_dir: no train run in experiment {experiment!r} tagged model_dir="
            f"{resolved}; train it with MLflow on, or pass `run_id`"
        )
    if not (model_dir / "model.json").is_file():
        raise ValueError(
            f"model_dir: {model_dir} holds no saved model (no model.json) any more; its latest "
            f"train run is {runs[0].info.run_id}: retrain it, or register a run that logged its "
            "model with `run_id`"
        )
    current = model_version(model_dir)
    for run in runs:
        if run.data.tags.get(MODEL_VERSION_TAG) == current:
            return run
    legacy = [r for r in runs if MODEL_VERSION_TAG not in r.data.tags]
    if legacy and legacy[0] is runs[0]:
        return runs[0]  # trained by an older version, which logged the model as an artifact
    newest = runs[0]
    raise ValueError(
        f"model_dir: {model_dir} now holds {current}, which none of its {len(runs)} train "
        f"run(s) trained (the newest, {newest.info.run_id}, trained "
        f"{newest.data.tags.get(MODEL_VERSION_TAG, '?')}): it was changed or retrained without "
        "MLflow (no_mlflow=True) since; retrain it with MLflow on, or register a run with "
        "`run_id`"
    )


def _evaluated_this_model(client: Any, run: Any, ev: Any) -> bool:
    """Did evaluate run ``ev`` score ``run``'s model (not an earlier or later one in its dir)?"""
    mine = run.data.tags.get(MODEL_VERSION_TAG)
    theirs = ev.data.tags.get(MODEL_VERSION_TAG)
    if mine and theirs:
        return mine == theirs
    if ev.info.start_time < run.info.start_time:
        return False  # scored whatever the directory held before this run trained it
    later = [
        r
        for r in _train_runs(client, [run.info.experiment_id], run.data.tags["model_dir"])
        if run.info.start_time < r.info.start_time <= ev.info.start_time
    ]
    return not later  # no retrain of the directory between this run and the evaluation


def metric_for_run(client: Any, run: Any, metric: str) -> tuple[float | None, str]:
    """The run's model's ``metric`` and where it came from (see the module docstring)."""
    key = metric_key(metric)
    model_dir = run.data.tags.get("model_dir")
    fp = run.data.tags.get("dataset.fingerprint")
    if model_dir and fp:
        found = client.search_runs(
            [run.info.experiment_id],
            filter_string=(
                f"tags.stage = 'evaluate-model' and tags.model_dir = {_quote(model_dir)} "
                f"and tags.`dataset.fingerprint` = {_quote(fp)}"
            ),
            order_by=["attributes.start_time DESC"],
        )
        for ev in found:
            if key in ev.data.metrics and _evaluated_this_model(client, run, ev):
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
    """Register the run's model (logged once, as pyfunc) as a new version of ``name``; maybe
    promote it.

    Raises:
        ValueError: neither/both of ``run_id`` and ``model_dir``; no such run, or not a train run;
            no train run for ``model_dir``, or none that trained its current contents; the run's
            model directory was retrained or changed since and the run logged no model;
            ``promote_if_better`` given but the new version has no such metric.
    """
    from mlflow.exceptions import MlflowException

    if (run_id is None) == (model_dir is None):
        raise ValueError("run_id: give exactly one of `run_id` and `model_dir`")
    if not name:
        raise ValueError("name: expected a registered model name, got an empty string")
    client = _client(tracking_uri)
    if run_id is not None:
        try:
            run = client.get_run(run_id)
        except MlflowException as exc:
            raise ValueError(
                f"run_id: no run {run_id!r} in the tracking store {client.tracking_uri} "
                f"({exc.message.splitlines()[0]})"
            ) from exc
        stage = run.data.tags.get("stage")
        if stage != "train":
            raise ValueError(
                f"run_id: run {run_id} is not a `recsys-ebm train` run (its stage tag is "
                f"{stage!r}, expected 'train'); pass the run id that `recsys-ebm train` printed"
            )
    else:
        run = _find_train_run(client, Path(model_dir), experiment)
    run_id = run.info.run_id
    model_id = _logged_model_of(client, run)
    fp = run.data.tags.get("dataset.fingerprint", "")
    tags = {"run_id": run_id, "dataset.fingerprint": fp}
    if MODEL_VERSION_TAG in run.data.tags:
        tags[MODEL_VERSION_TAG] = run.data.tags[MODEL_VERSION_TAG]
    value, source = (None, "none")
    if promote_if_better:
        value, source = metric_for_run(client, run, promote_if_better)
        if value is None:
            raise ValueError(
                f"promote_if_better: run {run_id} has no metric "
                f"{metric_key(promote_if_better)!r}"
                " and no evaluate run scored its model; run `recsys-ebm evaluate` first"
            )
        tags[f"metric.{metric_key(promote_if_better)}"] = repr(value)
        tags["metric_source"] = source
    mv = _create_version(client, name, model_id, run_id, tags)
    promoted, reason = False, "no --promote-if-better: champion alias untouched"
    if promote_if_better:
        promoted, reason = _maybe_promote(
            client, name, mv, value, fp, promote_if_better, lower_is_better
        )
    uri = f"models:/{model_id}"
    return RegisterResult(name, str(mv.version), run_id, uri, promoted, reason, value)


def _create_version(client: Any, name: str, model_id: str, run_id: str, tags: dict) -> Any:
    """A new version of ``name`` whose source is the run's logged model (no copy is made)."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    return client.create_model_version(
        name, source=f"models:/{model_id}", run_id=run_id, tags=tags, model_id=model_id
    )


def _logged_model_of(client: Any, run: Any) -> str:
    """The id of the run's pyfunc model, logging it into the run first if it has none."""
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow.exceptions import MlflowException

    from recsys_ebm.batch import model_version
    from recsys_ebm.serving import log_pyfunc_model

    run_id = run.info.run_id
    known = run.data.tags.get(PYFUNC_TAG)
    if known:
        try:
            if client.get_logged_model(known).status != LoggedModelStatus.FAILED:
                return known
        except MlflowException:
            pass  # deleted: log it again below
    model_dir = Path(run.data.tags.get("model_dir", ""))
    expected = run.data.tags.get(MODEL_VERSION_TAG)
    with tempfile.TemporaryDirectory() as tmp:
        have = model_version(model_dir) if (model_dir / "model.json").is_file() else None
        if expected is not None and have == expected:
            local = model_dir
        elif _has_model_artifact(client, run_id):  # a run of an older version: its own copy
            local = Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=tmp))
        else:
            raise ValueError(_changed_message(client, run, model_dir, expected, have))
        dataset = _run_dataset(run)
        # nested: `recsys-ebm run` calls this inside its pipeline parent run
        with mlflow.start_run(run_id=run_id, nested=True):
            info = log_pyfunc_model(local, dataset=dataset)
            mlflow.set_tag(PYFUNC_TAG, info.model_id)
    return info.model_id


def _has_model_artifact(client: Any, run_id: str) -> bool:
    try:
        return any(a.path == "model/model.json" for a in client.list_artifacts(run_id, "model"))
    except Exception:  # an artifact store that cannot list: treat as absent
        return False


def _changed_message(
    client: Any, run: Any, model_dir: Path, expected: str | None, have: str | None
) -> str:
    """Why ``run`` cannot be registered: its directory no longer holds its model."""
    run_id = run.info.run_id
    if expected is None:
        return (
            f"run_id: run {run_id} recorded no model hash and logged no model, so its model "
            f"cannot be told apart from what {model_dir} holds now; retrain with MLflow on"
        )
    if have is None:
        now = "no longer holds a saved model"
    else:
        now = f"now holds {have}"
        for other in _train_runs(client, [run.info.experiment_id], str(model_dir)):
            if other.data.tags.get(MODEL_VERSION_TAG) == have:
                now += f" (trained by run {other.info.run_id}: register that one)"
                break
        else:
            now += " (changed or retrained without MLflow since)"
    return (
        f"run_id: run {run_id} trained {expected} into {model_dir}, which {now}; the run's own "
        "model is no longer on disk and was never logged, so registering it would register "
        "another model; retrain to register this configuration"
    )


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
        ValueError: ``uri`` is neither form (or has an empty name, alias or a non-numeric version).
    """
    form = "expected models:/NAME@ALIAS or models:/NAME/VERSION"
    ref = uri[len("models:/") :] if uri.startswith("models:/") else ""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        if name and alias:
            return name, alias, None
    elif "/" in ref:
        name, version = ref.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
        if name and version:
            raise ValueError(f"uri: {form} (VERSION a number), got {uri}")
    raise ValueError(f"uri: {form}, got {uri}")


def _registered_names(client: Any, limit: int = 20) -> str:
    names = sorted(m.name for m in client.search_registered_models(max_results=limit))
    if not names:
        return "none is registered"
    more = " ..." if len(names) == limit else ""
    return "registered models: " + ", ".join(names) + more


def _versions_of(client: Any, name: str) -> str:
    versions = client.search_model_versions(f"name = {_quote(name)}")
    nums = sorted(int(v.version) for v in versions)
    return ", ".join(str(v) for v in nums) or "none"


def resolve_version(uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` -> (NAME, VERSION), checked to exist.

    Raises:
        ValueError: malformed ``uri``; no registered model NAME (the message lists the registered
            models); no alias ALIAS or version VERSION of it (the message lists its aliases and
            versions).
    """
    from mlflow.exceptions import MlflowException

    name, alias, version = parse_model_uri(uri)
    client = _client(tracking_uri)
    store = client.tracking_uri
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ValueError(
            f"uri: {uri}: no registered model {name!r} in {store}; {_registered_names(client)}"
        ) from exc
    aliases = dict(model.aliases or {})
    if alias is not None:
        if alias not in aliases:
            have = ", ".join(f"@{a} (version {v})" for a, v in sorted(aliases.items()))
            raise ValueError(
                f"uri: {uri}: model {name!r} has no alias {alias!r}; its aliases: "
                f"{have or 'none'}; its versions: {_versions_of(client, name)}"
            )
        return name, str(aliases[alias])
    try:
        client.get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        raise ValueError(
            f"uri: {uri}: model {name!r} has no version {version}; its versions: "
            f"{_versions_of(client, name)}"
        ) from exc
    return name, str(version)


def resolve_model_uri(uri: str, tracking_uri: str | None, dst: str | Path) -> tuple[Path, str]:
    """``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``) -> (local model dir, version label).

    Downloads the registered pyfunc model and returns the saved Recommender directory inside its
    bundle, and a label ``NAME/vVERSION`` for the output's ``model_version`` column.

    Raises:
        ValueError: see :func:`resolve_version`; or the version is not a recsys-ebm pyfunc model.
    """
    import mlflow

    name, version = resolve_version(uri, tracking_uri)
    local = Path(
        mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(dst))
    )
    model_dir = local / "artifacts" / "bundle" / "model"
    if not (model_dir / "model.json").is_file():
        raise ValueError(f"uri: {uri} is not a recsys-ebm pyfunc model (no bundle/model)")
    return model_dir, f"{name}/v{version}"
