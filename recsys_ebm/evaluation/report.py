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
from recsys_ebm.io import atomic_dir

__all__ = ["write_report"]

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
        "code,pre{background:#f5f7fa;font-size:.8rem} pre{padding:.5rem;overflow-x:auto}",
    ]
)


def _columns(res: EvaluationResult) -> list[str]:
    cols = [f"{m}@{k}" for m in _METRIC_ORDER for k in res.ks] + ["mrr"]
    return cols


def _fig_png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _plots(res: EvaluationResult) -> dict[str, str]:
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
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    out["Metric@K curves per model"] = _fig_png(fig)

    fig, ax = plt.subplots(figsize=(8, 3.6))
    n_b = len(res.models[0].recall_by_bucket)
    width = 0.8 / len(res.models)
    for j, m in enumerate(res.models):
        ax.bar(np.arange(n_b) + j * width, np.nan_to_num(m.recall_by_bucket), width, label=m.name)
    ax.set_xticks(np.arange(n_b) + 0.4 - width / 2)
    ax.set_xticklabels(["head"] + [f"bucket {i + 1}" for i in range(1, n_b - 1)] + ["tail"])
    ax.set_ylabel(f"recall@{res.ks[-1]}")
    ax.set_title("Recall by item-popularity bucket (equal shares of training interactions)")
    ax.legend(fontsize=8)
    out["Recall by popularity bucket: do we only recommend blockbusters?"] = _fig_png(fig)

    n = len(res.models)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
    for ax, m in zip(axes[0], res.models, strict=True):
        lo = np.nanpercentile(np.concatenate([m.energies_pos, m.energies_rand]), 1)
        hi = np.nanpercentile(np.concatenate([m.energies_pos, m.energies_rand]), 99)
        bins = np.linspace(lo, hi, 40) if hi > lo else 10
        ax.hist(m.energies_rand, bins=bins, alpha=0.6, density=True, label="random items")
        ax.hist(m.energies_pos, bins=bins, alpha=0.6, density=True, label="held-out positives")
        ax.set_title(m.name, fontsize=9)
        ax.set_xlabel("energy (lower = better)", fontsize=8)
    axes[0][0].legend(fontsize=7)
    out["Energy of held-out positives vs random items"] = _fig_png(fig)
    return out


def _best(res: EvaluationResult, col: str) -> float | None:
    if any(col.startswith(p) for p in _LOWER_IS_NOT_BETTER):
        return None
    vals = [m.means.get(col, m.beyond.get(col, m.extra.get(col))) for m in res.models]
    vals = [v for v in vals if v is not None and not np.isnan(v)]
    if not vals:
        return None
    return min(vals) if col in ("rmse", "mae") else max(vals)


def _sig(res: EvaluationResult, name: str) -> str:
    s = res.significance.get(name)
    if s is None:
        return "reference" if name == res.best_baseline else ""
    return f"{s['mean_diff']:+.4f} (t p={s['t_pvalue']:.2g}, W p={s['wilcoxon_pvalue']:.2g})"


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
    sig_title = (
        f"Δ{res.primary} vs best baseline ({res.best_baseline}), paired t-test / Wilcoxon"
        if res.best_baseline
        else "paired test"
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
    h.append("<h2>Metrics</h2><div class='scroll'><table><tr><th>model</th>")
    h += [f"<th>{html.escape(c)}</th>" for c in cols + extra_cols]
    h.append(f"<th>{html.escape(sig_title)}</th></tr>")
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
        h.append(f"<td>{html.escape(_sig(res, m.name))}</td></tr>")
    h.append(
        f"</table><p class='meta'>{html.escape(variants)} Best value per column highlighted.</p>"
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
        "| model | " + " | ".join(cols + extra_cols) + f" | {sig_title} |",
        "|---|" + "---:|" * len(cols + extra_cols) + "---|",
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
        md.append(f"| {m.name} | " + " | ".join(cells) + f" | {_sig(res, m.name)} |")
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
        "meta": meta,
    }
    with atomic_dir(out, overwrite=overwrite) as tmp:
        (tmp / "report.html").write_text("".join(h))
        (tmp / "report.md").write_text("\n".join(md))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    return Path(out)
