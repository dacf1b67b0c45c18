"""Evaluation reports: a self-contained HTML page (plots embedded as PNG) and a Markdown twin."""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from recsys_ebm.evaluation.evaluate import EvaluationResult
from recsys_ebm.evaluation.stats import bootstrap_ci
from recsys_ebm.io import atomic_dir

__all__ = ["ALPHA", "report_figures", "verdict_rows", "write_report"]

_METRIC_ORDER = ("recall", "ndcg", "precision", "map", "hitrate")
_LOWER_IS_NOT_BETTER = ("avg_popularity",)  # descriptive columns, never highlighted

_CSS = " ".join(
    [
        "body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;",
        "color:#1f2933;padding:0 1rem}",
        "h1{font-size:1.6rem;margin-bottom:.2rem}",
        "h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #e4e7eb}",
        ".meta{color:#616e7c;font-size:.9rem} .scroll{overflow-x:auto}",
        "table{border-collapse:collapse;font-size:.85rem;margin:.6rem 0}",
        "th,td{border:1px solid #e4e7eb;padding:.35rem .5rem;text-align:right;white-space:nowrap}",
        "th{background:#f5f7fa} td:first-child,th:first-child{text-align:left}",
        "td.best{background:#e3f9e5;font-weight:600}",
        ".ci{color:#7b8794;font-size:.75rem;display:block}",
        ".plots{display:flex;flex-wrap:wrap;gap:1rem} .plots figure{margin:0;flex:1 1 520px}",
        ".plots img{width:100%;border:1px solid #e4e7eb}",
        "figcaption{font-size:.85rem;color:#52606d}",
        "table.verdict{font-size:.95rem} td.better{background:#e3f9e5;font-weight:600}",
        "td.worse{background:#ffe3e3;font-weight:600}",
        "table.verdict td:last-child,table.verdict th:last-child{text-align:left}",
        "code,pre{background:#f5f7fa;font-size:.8rem} pre{padding:.5rem;overflow-x:auto}",
    ]
)


def _columns(res: EvaluationResult) -> list[str]:
    cols = [f"{m}@{k}" for m in _METRIC_ORDER for k in res.ks] + ["mrr"]
    return cols


def _fig_png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    title = fig._suptitle.get_text() if fig._suptitle is not None else ""
    buf = io.BytesIO()
    # the visible title is also written into the PNG's metadata (tEXt "Title")
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Title": title})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def report_figures(res: EvaluationResult) -> dict[str, Any]:
    """The report's matplotlib figures, caption -> Figure; each has a title and titled axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric in zip(axes, ("recall", "ndcg"), strict=True):
        for m in res.models:
            ax.plot(res.ks, [m.means[f"{metric}@{k}"] for k in res.ks], marker="o", label=m.name)
        ax.set_xlabel("K")
        ax.set_ylabel(f"{metric}@K")
        ax.set_title(f"{metric}@K (higher is better)", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Ranking quality at each cut-off K ({res.split} split)")
    fig.tight_layout()
    out["Metric@K curves per model"] = fig

    fig, ax = plt.subplots(figsize=(8, 3.6))
    n_b = len(res.models[0].recall_by_bucket)
    width = 0.8 / len(res.models)
    for j, m in enumerate(res.models):
        ax.bar(np.arange(n_b) + j * width, np.nan_to_num(m.recall_by_bucket), width, label=m.name)
    ax.set_xticks(np.arange(n_b) + 0.4 - width / 2)
    ax.set_xticklabels(["head"] + [f"bucket {i + 1}" for i in range(1, n_b - 1)] + ["tail"])
    ax.set_ylabel(f"recall@{res.ks[-1]}")
    ax.set_title("buckets hold equal shares of training interactions", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle(f"Recall@{res.ks[-1]} by item-popularity bucket")
    fig.tight_layout()
    out["Recall by popularity bucket: do we only recommend blockbusters?"] = fig

    # energies: random items pile up in a narrow spike that dwarfs the positives on a linear
    # axis, so each class is normalised to its own density and the y axis is logarithmic
    n = len(res.models)
    ncols = min(n, 3)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False
    )
    for ax, m in zip(axes.flat, res.models, strict=False):
        both = np.concatenate([m.energies_pos, m.energies_rand]).astype(np.float64)
        both = both[np.isfinite(both)]
        lo, hi = (np.percentile(both, [0.5, 99.5]) if both.size else (0.0, 1.0))
        bins = np.linspace(lo, hi, 40) if hi > lo else 10
        for values, label, colour in (
            (m.energies_rand, "random items", "tab:blue"),
            (m.energies_pos, "held-out positives", "tab:orange"),
        ):
            v = np.asarray(values, dtype=np.float64)
            v = np.clip(v[np.isfinite(v)], lo, hi)
            if v.size:
                ax.hist(v, bins=bins, density=True, alpha=0.45, color=colour, label=label)
                ax.hist(v, bins=bins, density=True, histtype="step", lw=1.2, color=colour)
                ax.axvline(np.median(v), color=colour, ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_title(m.name, fontsize=10)
        ax.set_xlabel("energy (lower = better)", fontsize=8)
        ax.set_ylabel("density per class (log)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Energy of held-out positives vs random items (dashed: medians)")
    fig.tight_layout()
    out["Energy of held-out positives vs random items"] = fig
    return out


def _plots(res: EvaluationResult) -> dict[str, str]:
    return {caption: _fig_png(fig) for caption, fig in report_figures(res).items()}


def _best(res: EvaluationResult, col: str) -> float | None:
    if any(col.startswith(p) for p in _LOWER_IS_NOT_BETTER):
        return None
    vals = [m.means.get(col, m.beyond.get(col, m.extra.get(col))) for m in res.models]
    vals = [v for v in vals if v is not None and not np.isnan(v)]
    if not vals:
        return None
    return min(vals) if col in ("rmse", "mae") else max(vals)


#: significance level of the verdict (two-sided paired t-test on per-user values)
ALPHA = 0.05


def verdict_rows(res: EvaluationResult, *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One row per model: its headline metric against the best baseline, in plain words.

    Each row has ``model``, ``value`` (mean of ``res.primary``), ``diff`` (mean per-user
    difference to the best baseline), ``diff_ci`` (95% paired percentile-bootstrap interval of
    that difference), ``t_pvalue``, ``wilcoxon_pvalue`` and ``verdict``: "best baseline" for the
    reference itself, else "better" / "worse" when the paired t-test's p < :data:`ALPHA`, else
    "no significant difference". Rows are sorted by ``value``, best first. Empty when no
    baseline was evaluated.
    """
    if res.best_baseline is None:
        return []
    ref = next(m for m in res.models if m.name == res.best_baseline)
    rows = []
    for m in res.models:
        row: dict[str, Any] = {"model": m.name, "value": m.means[res.primary]}
        if m is ref:
            row.update(
                diff=0.0, diff_ci=None, t_pvalue=None, wilcoxon_pvalue=None,
                verdict="best baseline",
            )
        else:
            sig = res.significance[m.name]
            diff = np.asarray(m.per_user[res.primary], np.float64) - np.asarray(
                ref.per_user[res.primary], np.float64
            )
            p = sig["t_pvalue"]
            if np.isnan(p) or p >= ALPHA:
                verdict = "no significant difference"
            else:
                verdict = "better" if sig["mean_diff"] > 0 else "worse"
            row.update(
                diff=sig["mean_diff"],
                diff_ci=bootstrap_ci(diff, n_boot=n_boot, seed=seed),
                t_pvalue=p,
                wilcoxon_pvalue=sig["wilcoxon_pvalue"],
                verdict=verdict,
            )
        rows.append(row)
    return sorted(rows, key=lambda r: -r["value"])


def _p(p: float | None) -> str:
    if p is None:
        return ""
    return "n/a (identical)" if np.isnan(p) else f"{p:.2g}"


def _verdict_text(row: dict, res: EvaluationResult) -> str:
    if row["verdict"] == "best baseline":
        return "reference: the best baseline"
    if row["verdict"] == "no significant difference":
        return f"no significant difference from {res.best_baseline}"
    return f"{row['verdict']} than {res.best_baseline}"


def _verdict_cells(row: dict, res: EvaluationResult) -> list[str]:
    ci = row["diff_ci"]
    return [
        row["model"],
        f"{row['value']:.4f}",
        "" if row["diff_ci"] is None else f"{row['diff']:+.4f}",
        "" if ci is None else f"[{ci[0]:+.4f}, {ci[1]:+.4f}]",
        _p(row["t_pvalue"]),
        _p(row["wilcoxon_pvalue"]),
        _verdict_text(row, res),
    ]


def _verdict_header(res: EvaluationResult) -> list[str]:
    return [
        "model",
        res.primary,
        f"Δ vs {res.best_baseline}",
        "95% CI of Δ",
        "p (paired t-test)",
        "p (Wilcoxon)",
        "verdict",
    ]


def write_report(
    res: EvaluationResult,
    out: str | Path,
    *,
    dataset: Any,
    meta: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write ``report.html``, ``report.md`` and ``metrics.json`` into ``out`` atomically."""
    cols = _columns(res)
    extra_cols = sorted({k for m in res.models for k in (*m.beyond, *m.extra)})
    plots = _plots(res)
    summary = dataset.summary()
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    denom = "|test items|" if res.recall_denominator == "relevant" else "min(K, |test items|)"
    variants = (
        f"Recall denominator: {denom}; "
        "NDCG: binary gain, IDCG over min(K, |test items|); full ranking over the whole "
        "catalogue with each user's history masked; 95% percentile-bootstrap intervals over users."
    )
    verdicts = verdict_rows(res)
    from recsys_ebm.models import baseline_names

    BASELINES = baseline_names()  # noqa: N806  the registry's baseline models
    if verdicts:
        verdict_intro = (
            f"Each model against the best baseline, {res.best_baseline} (the baseline - one of "
            f"{', '.join(BASELINES)} - with the highest {res.primary}), on {res.primary}: Δ is "
            f"the mean per-user difference, its 95% interval a paired bootstrap over users; "
            f"the verdict reads the paired t-test at the {ALPHA:g} level."
        )
    else:
        verdict_intro = (
            f"No baseline ({', '.join(BASELINES)}) among the evaluated models, so there is no "
            f"verdict: evaluate one alongside (e.g. --model DIR_OF_A_POPULARITY_MODEL)."
        )

    # ---------------------------------------------------------------- HTML
    h = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>recsys-ebm report"
        f"</title><style>{_CSS}</style></head><body>"
    ]
    h.append("<h1>recsys-ebm evaluation report</h1>")
    h.append(
        f"<p class='meta'>split <b>{res.split}</b> · {res.n_users:,} users evaluated "
        f"({res.n_skipped:,} without history skipped) · dataset fingerprint "
        f"<code>{html.escape(str(dataset.fingerprint))}</code> · {created}</p>"
    )
    h.append(f"<h2 id='verdict'>Verdict on {html.escape(res.primary)}</h2>")
    h.append(f"<p>{html.escape(verdict_intro)}</p>")
    if verdicts:
        h.append("<div class='scroll'><table class='verdict'><tr>")
        h += [f"<th>{html.escape(c)}</th>" for c in _verdict_header(res)]
        h.append("</tr>")
        for row in verdicts:
            cells = _verdict_cells(row, res)
            cls = {"better": "better", "worse": "worse"}.get(row["verdict"], "")
            h.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells[:-1]))
            h.append(f"<td class='{cls}'>{html.escape(cells[-1])}</td></tr>")
        h.append("</table></div>")
    h.append(
        "<h2 id='metrics'>All metrics</h2><p class='meta'>Scroll sideways for more columns."
        "</p><div class='scroll'><table><tr><th>model</th>"
    )
    h += [f"<th>{html.escape(c)}</th>" for c in cols + extra_cols]
    h.append("</tr>")
    for m in res.models:
        h.append(f"<tr><td>{html.escape(m.name)}</td>")
        for c in cols + extra_cols:
            v = m.means.get(c, m.beyond.get(c, m.extra.get(c)))
            if v is None:
                h.append("<td></td>")
                continue
            best = _best(res, c)
            cls = " class='best'" if best is not None and np.isclose(v, best) else ""
            ci = m.ci.get(c)
            ci_s = f"<span class='ci'>[{ci[0]:.4f}, {ci[1]:.4f}]</span>" if ci else ""
            h.append(f"<td{cls}>{v:.4f}{ci_s}</td>")
        h.append("</tr>")
    h.append(
        f"</table></div><p class='meta'>{html.escape(variants)} Best value per column "
        "highlighted.</p>"
    )
    h.append("<h2>Plots</h2><div class='plots'>")
    for title, png in plots.items():
        h.append(
            f"<figure><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>"
            f"<figcaption>{html.escape(title)}</figcaption></figure>"
        )
    h.append("</div><h2>Dataset</h2><table>")
    h.append(
        f"<tr><td>users</td><td>{summary['users']:,}</td></tr>"
        f"<tr><td>items</td><td>{summary['items']:,}</td></tr>"
    )
    for part, n in summary["interactions"].items():
        h.append(f"<tr><td>{html.escape(part)} interactions</td><td>{n:,}</td></tr>")
    h.append(f"<tr><td>density</td><td>{summary['density']:.4%}</td></tr>")
    src = dataset.manifest.get("source", {})
    h.append(
        f"<tr><td>source</td><td>{html.escape(str(src.get('path', '')))} "
        f"[{html.escape(str(src.get('format', '')))}], split "
        f"{html.escape(str(dataset.manifest.get('split', '')))}</td></tr></table>"
    )
    h.append(
        "<h2>Models</h2><table><tr><th>model</th><th>type</th><th>config</th>"
        "<th>ranking time (s)</th></tr>"
    )
    for m in res.models:
        h.append(
            f"<tr><td>{html.escape(m.name)}</td><td>{html.escape(m.kind)}</td><td "
            f"style='text-align:left;white-space:normal'><code>"
            f"{html.escape(json.dumps(m.config))}</code></td><td>{m.seconds:.2f}</td></tr>"
        )
    h.append("</table><h2>Run metadata</h2><pre>")
    h.append(html.escape(json.dumps({**meta, "created": created}, indent=2, default=str)))
    h.append("</pre></body></html>")

    # ---------------------------------------------------------------- Markdown
    md = [
        "# recsys-ebm evaluation report",
        "",
        f"Split `{res.split}`, {res.n_users:,} users evaluated ({res.n_skipped:,} skipped), "
        f"dataset fingerprint `{dataset.fingerprint}`, {created}.",
        "",
        f"## Verdict on {res.primary}",
        "",
        verdict_intro,
        "",
    ]
    if verdicts:
        md.append("| " + " | ".join(_verdict_header(res)) + " |")
        md.append("|---|" + "---:|" * 5 + "---|")
        for row in verdicts:
            cells = _verdict_cells(row, res)
            cells[-1] = f"**{cells[-1]}**"
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
    md += [
        "## All metrics",
        "",
        "| model | " + " | ".join(cols + extra_cols) + " |",
        "|---|" + "---:|" * len(cols + extra_cols),
    ]
    for m in res.models:
        cells = []
        for c in cols + extra_cols:
            v = m.means.get(c, m.beyond.get(c, m.extra.get(c)))
            best = _best(res, c)
            s = "" if v is None else f"{v:.4f}"
            cells.append(
                f"**{s}**" if v is not None and best is not None and np.isclose(v, best) else s
            )
        md.append(f"| {m.name} | " + " | ".join(cells) + " |")
    md += ["", variants, "", "95% bootstrap intervals:", ""]
    for m in res.models:
        md.append(
            f"- {m.name}: "
            + ", ".join(
                f"{c} [{m.ci[c][0]:.4f}, {m.ci[c][1]:.4f}]"
                for c in cols
                if c in m.ci and "@" in c and c.split("@")[0] in ("recall", "ndcg")
            )
        )
    md += ["", "Plots are in report.html.", ""]

    metrics = {
        "split": res.split,
        "ks": list(res.ks),
        "recall_denominator": res.recall_denominator,
        "n_users": res.n_users,
        "best_baseline": res.best_baseline,
        "primary": res.primary,
        "models": {
            m.name: {
                "kind": m.kind,
                "means": m.means,
                "ci": m.ci,
                **m.beyond,
                **m.extra,
                "seconds": m.seconds,
            }
            for m in res.models
        },
        "significance": res.significance,
        "verdict": verdicts,
        "meta": meta,
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "report.html").write_text("".join(h))
        (tmp / "report.md").write_text("\n".join(md))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return Path(out)
