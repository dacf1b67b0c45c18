"""Item metadata (titles, genres) shipped beside a MovieLens / MovieTweetings ratings file.

Re-exported by :mod:`recsys_ebm.data.readers`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl

from recsys_ebm.diagnostics import DataWarning

__all__ = ["read_item_metadata"]

_ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def read_item_metadata(path: str | Path, fmt: str) -> pl.DataFrame | None:
    """Titles and genres beside the ratings file, when the source ships them.

    Returns:
        item_id (String, raw), title (String), genres (List[String]); None when absent.
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    rows: list[tuple[str, str, list[str]]] = []
    if fmt == "ml-100k" and (folder / "u.item").is_file():
        text = (folder / "u.item").read_bytes().decode("latin-1")
        for line in text.splitlines():
            parts = line.split("|")
            if len(parts) < 5 + len(_ML100K_GENRES):
                continue
            flags = parts[5 : 5 + len(_ML100K_GENRES)]
            rows.append(
                (
                    parts[0],
                    parts[1],
                    [g for g, f in zip(_ML100K_GENRES, flags, strict=True) if f == "1"],
                )
            )
    elif fmt in ("ml-1m", "movietweetings") and (folder / "movies.dat").is_file():
        enc = "utf-8" if fmt == "movietweetings" else "latin-1"
        text = (folder / "movies.dat").read_bytes().decode(enc, errors="replace")
        for line in text.splitlines():
            parts = line.split("::")
            if len(parts) >= 2:
                genres = parts[2].split("|") if len(parts) > 2 and parts[2] else []
                rows.append((parts[0], parts[1], genres))
    elif fmt == "ml-latest" and (folder / "movies.csv").is_file():
        # item metadata is optional: an unreadable movies.csv is warned about, not fatal
        try:
            movies = pl.read_csv(folder / "movies.csv", infer_schema=False)
            return movies.select(
                pl.col("movieId").alias("item_id"),
                pl.col("title"),
                pl.col("genres")
                .str.split("|")
                .list.eval(pl.element().filter(pl.element() != "(no genres listed)")),
            ).unique(subset="item_id", keep="first", maintain_order=True)
        except (pl.exceptions.PolarsError, OSError) as exc:
            warnings.warn(
                f"{folder / 'movies.csv'}: item metadata skipped (expected the columns "
                f"movieId,title,genres): {str(exc).splitlines()[0]}",
                DataWarning,
                stacklevel=2,
            )
            return None
    if not rows:
        return None
    return pl.DataFrame(
        rows,
        schema={"item_id": pl.String, "title": pl.String, "genres": pl.List(pl.String)},
        orient="row",
    )
