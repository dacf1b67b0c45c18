"""Bad inputs of ``recsys-ebm recommend`` (batch jobs)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tests.cli_cases import Case, World
from tests.cli_cases._world import dataset, log_csv, popularity_model


def other_items_dataset(w: World) -> Path:
    """:func:`dataset`'s log with every item id renamed: the same item count, other items."""

    def build(w: World) -> Path:
        import polars as pl

        from recsys_ebm.data.prepare import prepare_dataset

        p = w.dir("logs") / "log-other-items.csv"
        pl.read_csv(log_csv(w)).with_columns(pl.col("item_id") + 100_000).write_csv(p)
        out = w.root / "data-other-items"
        prepare_dataset(p, seed=0).save(out)
        return out

    return w.get("other_items_dataset", build)


def _recommend(
    w: World, t: Path, *extra: str, out: Path | None = None, data: Path | None = None
) -> list[str]:
    return [
        "recommend",
        "--model",
        str(popularity_model(w)),
        "--data",
        str(data or dataset(w)),
        "--out",
        str(out or t / "recs.parquet"),
        "--no-mlflow",
        *extra,
    ]


def same_items_dataset(w: World) -> Path:
    """:func:`dataset`'s log plus one new user of its items: the same items, other users."""

    def build(w: World) -> Path:
        import polars as pl

        from recsys_ebm.data.prepare import prepare_dataset

        log = pl.read_csv(log_csv(w))
        new_user = pl.lit(999_999, dtype=log["user_id"].dtype).alias("user_id")
        first = log.head(4).with_columns(new_user)
        p = w.dir("logs") / "log-one-more-user.csv"
        pl.concat([log, first.select(log.columns)]).write_csv(p)
        out = w.root / "data-one-more-user"
        prepare_dataset(p, seed=0).save(out)
        return out

    return w.get("same_items_dataset", build)


def ease_model(w: World) -> Path:
    """An EASE model on :func:`dataset`: another model for the same items."""

    def build(w: World) -> Path:
        from recsys_ebm.data.dataset import Dataset
        from recsys_ebm.models.ease import EASE

        ds = Dataset.load(dataset(w))
        m = EASE(l2=10.0, l2_grid=(), device="cpu").fit(ds.train)
        m.item_ids = ds.item_ids
        out = w.root / "model-ease"
        m.save(out)
        return out

    return w.get("ease_model", build)


def _resumed(change: str):
    """A job with --n 5 killed after one chunk, resumed with one thing changed."""

    def argv(w: World, t: Path) -> list[str]:
        from recsys_ebm.batch import model_version, run_batch
        from recsys_ebm.data.dataset import Dataset
        from recsys_ebm.models import load_model

        class Killed(Exception):
            pass

        class KillAfterOneChunk:
            def __init__(self, model):
                self.model, self.calls = model, 0

            def __getattr__(self, name):
                return getattr(self.model, name)

            def recommend(self, *args, **kwargs):
                self.calls += 1
                if self.calls > 1:
                    raise Killed
                return self.model.recommend(*args, **kwargs)

        model_dir = popularity_model(w)
        version = model_version(model_dir)
        try:
            run_batch(
                KillAfterOneChunk(load_model(model_dir)),
                Dataset.load(dataset(w)),
                t / "recs.parquet",
                n=5,
                chunk_size=20,
                version=version,
                model_hash=version,
                progress=False,
            )
        except Killed:
            pass
        assert (t / "recs.parquet.parts" / "chunk-000000.parquet").is_file()
        args = _recommend(
            w,
            t,
            "--n",
            "3" if change == "n" else "5",
            "--chunk-size",
            "20",
            "--resume",
            data=same_items_dataset(w) if change == "data" else None,
        )
        if change == "model":
            args[args.index("--model") + 1] = str(ease_model(w))
        return args

    return argv


def _history(body: str):
    def argv(w: World, t: Path) -> list[str]:
        from recsys_ebm.data.dataset import Dataset

        item = Dataset.load(dataset(w)).item_ids[0]
        (t / "hist.csv").write_text("user_id,item_id\n" + body.format(item=item))
        return _recommend(w, t, "--history", str(t / "hist.csv"))

    return argv


_HELD: list[int] = []  # lock fds held for the running case (released by its ``absent``)


def _release() -> None:
    while _HELD:
        os.close(_HELD.pop())


def _locked(w: World, t: Path) -> list[str]:
    """Another job holds the output's lock (this test process holds the flock)."""
    _release()
    fd = os.open(t / "recs.parquet.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _HELD.append(fd)
    return _recommend(w, t)


def _unlock_and_list(w: World, t: Path) -> list[Path]:
    _release()
    return [t / "recs.parquet", t / "recs.parquet.parts"]


def _out_is_dir(w: World, t: Path) -> list[str]:
    (t / "outdir").mkdir()
    return _recommend(w, t, out=t / "outdir")


def _out_under_file(w: World, t: Path) -> list[str]:
    (t / "afile").write_text("a regular file, not a directory")
    return _recommend(w, t, out=t / "afile" / "recs.parquet")


def _recs(w: World, t: Path) -> list[Path]:
    return [t / "recs.parquet"]


CASES = [
    Case(
        id="batch-model-on-dataset-with-other-items",
        argv=lambda w, t: _recommend(w, t, data=other_items_dataset(w)),
        expect=("--model", "item vocabulary differs"),
        absent=_recs,
    ),
    Case(
        id="batch-resume-after-n-changed",
        argv=_resumed("n"),
        expect=("--resume", "option n changed (5 -> 3)"),
        absent=_recs,
    ),
    Case(
        id="batch-resume-after-dataset-changed",
        argv=_resumed("data"),
        expect=("--resume", "the --data changed"),
        absent=_recs,
    ),
    Case(
        id="batch-resume-after-model-changed",
        argv=_resumed("model"),
        expect=("--resume", "the model changed"),
        absent=_recs,
    ),
    Case(
        id="batch-history-empty-user-id",
        argv=_history("newbie,{item}\n,{item}\n"),
        expect=("--history", "hist.csv line 3", "empty user_id"),
        absent=_recs,
    ),
    Case(
        id="batch-history-empty-item-id",
        argv=_history("newbie,{item}\nnewbie,\n"),
        expect=("--history", "hist.csv line 3", "empty item_id"),
        absent=_recs,
    ),
    Case(
        id="batch-n-negative",
        argv=lambda w, t: _recommend(w, t, "--n", "-5"),
        expect=("--n: expected a positive int", "-5"),
        absent=_recs,
    ),
    Case(
        id="batch-out-is-a-directory",
        argv=_out_is_dir,
        expect=("--out", "outdir is a directory"),
        absent=lambda w, t: [t / "outdir.parts", t / "outdir.lock"],
    ),
    Case(
        id="batch-out-under-a-regular-file",
        argv=_out_under_file,
        expect=("--out", "afile is not a directory"),
        absent=lambda w, t: [t / "afile" / "recs.parquet"],
    ),
    Case(
        id="batch-out-locked-by-another-job",
        argv=_locked,
        expect=("--out: another job holds", "recs.parquet"),
        absent=_unlock_and_list,
    ),
]
