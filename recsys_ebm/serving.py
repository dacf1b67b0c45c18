"""Online serving: any saved Recommender directory as an MLflow pyfunc model.

The pyfunc artifact is a *bundle* directory::

    bundle/
      model/          the saved model directory (model.json, weights.safetensors, vocabularies;
                      a ranker also holds its components' directories)
      serving.json    what the bundle holds (model name, where the histories came from)
      history.npz     (U, I) CSR of known users' histories, when known (scipy npz, no pickle)
      users.json      raw user id of each history row

Known users are served from ``history.npz``: the dataset's ``history("test")`` (train + valid +
fold-in) when the bundle was built from a dataset - the same history the batch job uses - else
the history a ranker stores. The pyfunc is logged as *code* (no pickled Python object); weights
load from safetensors.

Request (pandas frame, one row per request):

* ``user_id`` (required): raw user id, an int or a non-empty string (``42``, ``42.0`` and ``"42"``
  name the same user; ``1.5``, ``true`` and ``""`` are refused, never rounded or cast).
* ``history`` (optional list of raw item ids): for a new user, the history to serve from; for a
  known user, items added to the stored history (e.g. recent clicks).
* ``n`` (optional integer, 1 to :data:`MAX_N`, default 10; a value above the catalogue size is
  capped at it, so a request cannot make the server allocate more than one catalogue's worth) and
  ``exclude`` (optional list of raw item ids).

``user_id`` and ``n`` are declared ``Any`` in the signature so that MLflow passes them through as
sent: with a typed column, its JSON parser would silently cast ``1.5`` or ``true`` to user 1.

Policies: unknown item ids in ``history`` / ``exclude`` are ignored and reported in the
``ignored_items`` output column (param ``unknown_items="error"`` makes them a 400 instead). A user
with no history at all gets the model's answer for an empty history - the ranker's popularity
fallback - flagged ``fallback=True``. Malformed requests raise ``MlflowException`` with
``INVALID_PARAMETER_VALUE``, which the scoring server returns as HTTP 400.

A bundle is built only from a dataset with the model's item vocabulary
(:func:`recsys_ebm.compat.check_model_matches_dataset`): histories indexed by another catalogue
would serve the wrong items.

Response: one row per request: ``user_id``, ``item_ids`` (list, best first), ``energies`` (list,
ascending, lower = better), ``fallback`` (bool), ``ignored_items`` (list).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_ebm.data.vocab import Vocabulary
from recsys_ebm.models.capabilities import HistoryHolder

__all__ = [
    "DEFAULT_N",
    "MAX_N",
    "RecommenderModel",
    "build_bundle",
    "log_pyfunc_model",
    "signature_for",
]

#: list length when a request gives no ``n``
DEFAULT_N = 10
#: largest ``n`` a request may ask for (larger values are refused; values above the catalogue
#: size are capped at it)
MAX_N = 1_000_000
_ENTRY = (
    "import mlflow\n"
    "from recsys_ebm.serving import RecommenderModel\n"
    "mlflow.models.set_model(RecommenderModel())\n"
)


def build_bundle(model_dir: str | Path, out: str | Path, *, dataset: Any = None) -> Path:
    """Write a serving bundle (see the module docstring) for ``model_dir`` into ``out``.

    Args:
        model_dir: a saved Recommender directory.
        out: bundle directory to create (must not exist).
        dataset: the prepared :class:`~recsys_ebm.data.dataset.Dataset` the model was trained on;
            its ``history("test")`` serves known users. Without it, a model that stores a
            history (the ranker) serves from that; otherwise only request histories are used.
    """
    from recsys_ebm.compat import check_model_matches_dataset
    from recsys_ebm.models import load_model

    model_dir, out = Path(model_dir), Path(out)
    model = load_model(model_dir, device="cpu")
    if model.history_values != "binary":
        raise ValueError(
            f"model_dir: {model_dir} holds a {model.name!r} model, which ranks from ratings; "
            "online requests carry item ids without ratings, so it cannot be served here "
            "(score it with `recsys-ebm recommend`, which reads the dataset's ratings)"
        )
    if dataset is not None:
        # the bundled histories index the dataset's items: they must be the model's items
        check_model_matches_dataset(model, dataset, argument=f"dataset (serving {model_dir})")
    out.mkdir(parents=True)
    shutil.copytree(model_dir, out / "model")
    info: dict[str, Any] = {"model": model.name, "history_source": None}
    if dataset is not None:
        history, users = dataset.history("test"), dataset.user_vocab
        info["history_source"] = f"dataset {dataset.fingerprint}: history('test')"
    elif (
        isinstance(model, HistoryHolder)
        and model.history is not None
        and model.user_vocab is not None
    ):
        history, users = model.history, model.user_vocab
        info["history_source"] = "model"
    else:
        history = users = None
    if history is not None and users is not None:
        sp.save_npz(out / "history.npz", sp.csr_matrix(history, dtype=np.float32))
        users.save(out / "users.json")
    (out / "serving.json").write_text(json.dumps(info, indent=2))
    return out


def signature_for(user_ids: Any, item_ids: Any) -> Any:
    """The request/response signature, typed like the vocabularies (long ids or strings)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, ParamSchema, ParamSpec, Schema

    def kind(ids: Any) -> str:
        return "long" if ids is not None and all(_is_int(x) for x in ids) else "string"

    u, i = kind(user_ids), kind(item_ids)
    inputs = Schema(
        [
            # user_id and n are checked by the model (RecommenderModel.predict): with a typed
            # column MLflow's JSON parser casts 1.5 or true to 1 before the model sees it
            ColSpec(AnyType(), "user_id"),
            # lists of item ids, checked by the model: typed Array columns would reject a batch
            # where some records leave them out (pandas fills NaN), so they are AnyType here
            ColSpec(AnyType(), "history", required=False),
            ColSpec(AnyType(), "n", required=False),
            ColSpec(AnyType(), "exclude", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec(u, "user_id"),
            ColSpec(Array(i), "item_ids"),
            ColSpec(Array("float"), "energies"),
            ColSpec("boolean", "fallback"),
            ColSpec(Array(i), "ignored_items"),
        ]
    )
    params = ParamSchema([ParamSpec("unknown_items", "string", "ignore")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def log_pyfunc_model(model_dir: str | Path, *, dataset: Any = None, name: str = "pyfunc") -> Any:
    """Log ``model_dir`` as a pyfunc model into the active MLflow run; returns the ModelInfo.

    The input example is one known user (when histories are bundled) and one new user with a
    two-item history.
    """
    import pandas as pd

    from recsys_ebm import __version__

    with tempfile.TemporaryDirectory() as tmp:
        bundle = build_bundle(model_dir, Path(tmp) / "bundle", dataset=dataset)
        served = RecommenderModel()
        served.load_bundle(bundle)
        items = list(served.item_ids)
        users = served.users if served.users is not None else []
        example = pd.DataFrame(
            {
                "user_id": [users[0] if users else _new_id(items), _new_id(users)],
                "history": [[], items[:2]],
                "n": [5, 5],
            }
        )
        sig = signature_for(users or None, items)
        entry = Path(tmp) / "recsys_ebm_pyfunc.py"
        entry.write_text(_ENTRY)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts={"bundle": str(bundle)},
            signature=sig,
            input_example=example,
            pip_requirements=[f"recsys-ebm=={__version__}", f"mlflow=={mlflow.__version__}"],
        )


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """pyfunc ``PythonModel`` serving a bundle; see the module docstring for the protocol."""

    def __init__(self) -> None:
        super().__init__()
        self.model: Any = None
        self.item_ids: np.ndarray | None = None
        self.users: list[Any] | None = None
        self.history: sp.csr_matrix | None = None
        self.item_vocab: Vocabulary | None = None
        self.user_vocab: Vocabulary | None = None

    def load_context(self, context: Any) -> None:
        self.load_bundle(Path(context.artifacts["bundle"]))

    def load_bundle(self, bundle: str | Path) -> None:
        from recsys_ebm.models import load_model

        bundle = Path(bundle)
        self.model = load_model(bundle / "model", device="auto")
        n_items = int(self.model.n_items)
        vocab = self.model.item_vocab
        self.item_vocab = Vocabulary(np.arange(n_items), name="item") if vocab is None else vocab
        self.item_ids = self.item_vocab.ids
        if (bundle / "history.npz").is_file():
            self.history = sp.csr_matrix(sp.load_npz(bundle / "history.npz"), dtype=np.float32)
            self.user_vocab = Vocabulary.load(bundle / "users.json", name="user")
            self.users = self.user_vocab.to_list()

    # ``pd.DataFrame`` is the one input hint from which mlflow infers no signature (ours is
    # explicit, see log_model) and for which it does not warn "add type hints to predict"
    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:  # noqa: ANN001
        """Answer a frame of requests (see the module docstring); bad requests raise HTTP 400."""
        policy = (params or {}).get("unknown_items", "ignore")
        if policy not in ("ignore", "error"):
            _bad(f"params.unknown_items: expected 'ignore' or 'error', got {policy!r}")
        if not isinstance(model_input, pd.DataFrame):
            _bad(f"input: expected a frame of requests, got {type(model_input).__name__}")
        if "user_id" not in model_input.columns:
            _bad(f"user_id: every request needs a user_id; got columns {list(model_input)}")
        rows = model_input.to_dict("records")
        out = [self._one(r, k, policy) for k, r in enumerate(rows)]
        return pd.DataFrame(
            out, columns=["user_id", "item_ids", "energies", "fallback", "ignored_items"]
        )

    # ------------------------------------------------------------------ one request
    def _one(self, req: dict[str, Any], k: int, policy: str) -> dict[str, Any]:
        uid = _user_id(req.get("user_id"), k)
        n = _request_n(req.get("n"), k, uid, int(self.model.n_items))
        hist_ids = _as_list(req.get("history"), "history", k)
        excl_ids = _as_list(req.get("exclude"), "exclude", k)
        hist_idx, bad_h = self._lookup_items(hist_ids)
        excl_idx, bad_e = self._lookup_items(excl_ids)
        ignored = bad_h + bad_e
        if ignored and policy == "error":
            _bad(f"history/exclude: request {k} (user {uid!r}) has unknown item ids {ignored}")
        row = -1 if self.user_vocab is None else self.user_vocab.get(uid)
        if row >= 0 and self.users is not None:
            uid = self.users[row]  # the vocabulary's id: "42" and 42.0 answer as 42
        n_items = int(self.model.n_items)
        known = np.zeros(0, np.int64)
        if row >= 0 and self.history is not None:
            known = self.history[row].indices.astype(np.int64)
        seen = np.union1d(known, np.asarray(hist_idx, np.int64))
        ui = sp.csr_matrix(
            (np.ones(seen.size, np.float32), (np.zeros(seen.size, np.int64), seen)),
            shape=(1, n_items),
        )
        items, en = self.model.recommend(
            ui,
            n=n,
            users=np.array([row], np.int64),
            exclude=np.asarray(excl_idx, np.int64) if excl_idx else None,
        )
        keep = items[0] >= 0
        return {
            "user_id": _py(uid),
            "item_ids": [_py(x) for x in self.item_ids[items[0][keep]]],
            "energies": [float(x) for x in en[0][keep]],
            "fallback": bool(seen.size == 0),
            "ignored_items": ignored,
        }

    def _lookup_items(self, ids: list[Any]) -> tuple[list[int], list[Any]]:
        assert self.item_vocab is not None
        if not ids:
            return [], []
        idx = self.item_vocab.index(ids, unknown="missing")  # (N,) -1 = unknown
        unknown = [_py(ids[k]) for k in np.flatnonzero(idx < 0)]
        return idx[idx >= 0].tolist(), unknown


# ---------------------------------------------------------------------- helpers
def _bad(message: str) -> None:
    """Raise the exception the scoring server turns into HTTP 400."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    raise MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float | np.floating) and math.isnan(x))


def _user_id(uid: Any, k: int) -> Any:
    """A request's raw user id: an int (integral floats become ints) or a non-empty string."""
    uid = _py(uid)
    if _missing(uid):
        _bad(f"user_id: request {k} has no user_id")
    if isinstance(uid, bool):
        _bad(f"user_id: request {k}: expected a user id (int or string), got the boolean {uid}")
    if isinstance(uid, float):
        if not uid.is_integer():
            _bad(f"user_id: request {k}: expected an integer or string user id, got {uid!r}")
        return int(uid)
    if isinstance(uid, str):
        if not uid.strip():
            _bad(f"user_id: request {k}: expected a user id, got an empty string")
        return uid
    if isinstance(uid, int):
        return uid
    _bad(f"user_id: request {k}: expected a user id (int or string), got {type(uid).__name__}")
    return None


def _request_n(n: Any, k: int, uid: Any, n_items: int) -> int:
    """A request's list length: an integer in [1, MAX_N], capped at the catalogue size."""
    n = _py(n)
    if _missing(n):
        return min(DEFAULT_N, n_items)
    where = f"n: request {k} (user {uid!r})"
    if isinstance(n, bool) or not _is_int(n):
        _bad(f"{where}: expected a positive int (1 to {MAX_N}), got {n!r}")
    if int(n) <= 0:
        _bad(f"{where}: expected a positive int (1 to {MAX_N}), got {int(n)}")
    if int(n) > MAX_N:
        _bad(
            f"{where}: expected at most {MAX_N}, got {int(n)} (an n above the catalogue size, "
            f"{n_items} items, already returns the whole catalogue)"
        )
    return min(int(n), n_items)


def _as_list(x: Any, name: str, k: int) -> list[Any]:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return []
    if isinstance(x, np.ndarray):
        return list(x.ravel())
    if isinstance(x, list | tuple):
        return list(x)
    _bad(f"{name}: request {k}: expected a list of item ids, got {type(x).__name__} {x!r}")
    return []


def _is_int(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    if isinstance(x, int | np.integer):
        return True
    return isinstance(x, float | np.floating) and float(x).is_integer()


def _py(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


def _new_id(existing: list[Any]) -> Any:
    """An id absent from ``existing``, of the same kind (for the input example)."""
    if existing and all(_is_int(x) for x in existing):
        return int(max(int(x) for x in existing) + 1)
    return "new-user"
