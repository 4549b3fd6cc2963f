"""`meshline report --out PATH`: one static HTML file with plots, readable offline (inline SVG, no
scripts, no fonts or files fetched).

1. dead letters per flow, per day          (marts.hygiene_scorecard, else meshline.dead_letters)
2. reconciliation failures per flow, per day (meshline.rule_findings: each declared rule's latest verdict)
3. freshness lag per flow, per day, hours  (marts.hygiene_scorecard)
4. MTTR by severity, minutes               (meshline.incidents)
5. synthetic detection over 90 days, %     (meshline.synthetic_runs)

Each plot sits at a fixed place on the page (the layout is absolute), so a screenshot can be read plot
by plot; data is drawn in saturated colours, axes and text in greys.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from assets.loading.warehouse import Warehouse
from assets.settings import Settings

PALETTE = {"lead_handoff": "#d62728", "quote_to_cash": "#1f77b4", "subscription_updates": "#2ca02c",
           "P1": "#d62728", "P2": "#ff7f0e", "detected": "#9467bd"}
EXTRA = ["#8c564b", "#e377c2", "#17becf", "#bcbd22"]
W, H, PAD_L, PAD_B, PAD_T, PAD_R = 900, 240, 60, 40, 30, 160
TOP0, GAP = 90, 290  # where plot i starts on the page: TOP0 + i * GAP


@dataclass
class Plot:
    title: str
    unit: str
    series: dict[str, list[tuple[str, float]]]  # name -> [(x label, y)]
    kind: str = "line"  # line | bar


def _color(name: str, i: int) -> str:
    return PALETTE.get(name, EXTRA[i % len(EXTRA)])


def svg(plot: Plot) -> str:
    xs = sorted({x for pts in plot.series.values() for x, _ in pts})
    ys = [y for pts in plot.series.values() for _, y in pts if y is not None]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">',
           f'<text x="{PAD_L}" y="18" font-size="14" fill="#333">{html.escape(plot.title)}</text>']
    x0, x1, y0, y1 = PAD_L, W - PAD_R, H - PAD_B, PAD_T
    out.append(f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#999"/>'
               f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#999"/>')
    if not xs or not ys:
        out.append(f'<text x="{(x0 + x1) // 2}" y="{(y0 + y1) // 2}" font-size="13" fill="#888" '
                   f'text-anchor="middle">no data yet</text></svg>')
        return "".join(out)
    top = max(ys) or 1.0
    top = top * 1.1

    def px(i: int) -> float:
        return x0 + (x1 - x0) * ((i + 0.5) / len(xs))

    def py(v: float) -> float:
        return y0 - (y0 - y1) * (v / top)

    for frac in (0.5, 1.0):
        v = top / 1.1 * frac
        out.append(f'<text x="{x0 - 6}" y="{py(v) + 4:.1f}" font-size="10" fill="#666" text-anchor="end">'
                   f'{v:.3g}</text><line x1="{x0}" y1="{py(v):.1f}" x2="{x1}" y2="{py(v):.1f}" stroke="#eee"/>')
    step = max(1, len(xs) // 8)
    for i, x in enumerate(xs):
        if i % step == 0:
            out.append(f'<text x="{px(i):.1f}" y="{y0 + 16}" font-size="10" fill="#666" '
                       f'text-anchor="middle">{html.escape(str(x)[5:] if len(str(x)) == 10 else str(x))}</text>')
    n = len(plot.series)
    bw = (x1 - x0) / max(1, len(xs)) / (n + 1)
    for k, (name, pts) in enumerate(sorted(plot.series.items())):
        c = _color(name, k)
        idx = {x: i for i, x in enumerate(xs)}
        if plot.kind == "bar":
            for x, y in pts:
                left = px(idx[x]) - bw * n / 2 + k * bw
                out.append(f'<rect x="{left:.1f}" y="{py(y):.1f}" width="{bw * 0.9:.1f}" '
                           f'height="{max(2.0, y0 - py(y)):.1f}" fill="{c}"/>')
        else:
            path = " ".join(f"{px(idx[x]):.1f},{py(y):.1f}" for x, y in sorted(pts) if y is not None)
            out.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="3"/>')
            for x, y in pts:
                if y is not None:
                    out.append(f'<circle cx="{px(idx[x]):.1f}" cy="{py(y):.1f}" r="4" fill="{c}"/>')
        out.append(f'<rect x="{x1 + 14}" y="{y1 + 6 + k * 18}" width="12" height="12" fill="{c}"/>'
                   f'<text x="{x1 + 32}" y="{y1 + 16 + k * 18}" font-size="12" fill="#333">{html.escape(name)}</text>')
    out.append(f'<text x="14" y="{(y0 + y1) / 2:.0f}" font-size="11" fill="#666" '
               f'transform="rotate(-90 14 {(y0 + y1) / 2:.0f})" text-anchor="middle">{html.escape(plot.unit)}</text>')
    out.append("</svg>")
    return "".join(out)


def gather(wh: Warehouse) -> list[Plot]:
    from assets.remediation.state import now

    def q(sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with wh.session() as s:
            return s.query(sql, params)

    dead: dict[str, list[tuple[str, float]]] = {}
    recon: dict[str, list[tuple[str, float]]] = {}
    fresh: dict[str, list[tuple[str, float]]] = {}
    if wh.table_exists("marts", "hygiene_scorecard"):
        for flow, part, d, lag in q("SELECT flow, partition_key, dead_letters,"
                                    " freshness_lag_hours FROM marts.hygiene_scorecard ORDER BY partition_key"):
            dead.setdefault(flow, []).append((str(part), float(d or 0)))
            if lag is not None:
                fresh.setdefault(flow, []).append((str(part), round(float(lag), 2)))
    elif wh.table_exists("meshline", "dead_letters"):
        for flow, part, n in q("SELECT flow, partition_key, count(*) FROM meshline.dead_letters GROUP BY 1, 2"):
            dead.setdefault(flow, []).append((str(part), float(n)))
    if wh.table_exists("meshline", "rule_findings"):  # the rules' own verdicts, dbt built or not
        for flow, part, n in q("SELECT flow, partition_key, sum(failing) FROM meshline.rule_findings"
                               " GROUP BY flow, partition_key ORDER BY partition_key"):
            recon.setdefault(flow, []).append((str(part), float(n or 0)))
    mttr: dict[str, list[Any]] = {}
    if wh.table_exists("meshline", "incidents"):
        for sev, m in q("SELECT severity, avg(minutes_to_resolve) FROM meshline.incidents WHERE status = 'resolved'"
                        " GROUP BY severity ORDER BY severity"):
            mttr.setdefault(sev, []).append((sev, round(float(m), 1)))
    syn: dict[str, list[Any]] = {}
    if wh.table_exists("meshline", "synthetic_runs"):
        for started, det, inj in q("SELECT started_at, modes_detected, modes_injected FROM meshline.synthetic_runs"
                                   " WHERE started_at >= ? ORDER BY started_at", (now() - timedelta(days=90),)):
            syn.setdefault("detected", []).append((started.strftime("%Y-%m-%d %H:%M"),
                                                   round(100.0 * det / inj, 1) if inj else 0.0))
    return [Plot("Dead letters per flow, per day", "dead letters", dead),
            Plot("Reconciliation failures per flow, per day", "failures", recon),
            Plot("Freshness lag per flow (newest change vs day end)", "hours", fresh),
            Plot("MTTR by severity (resolved incidents)", "minutes", mttr, kind="bar"),
            Plot("Synthetic end-to-end runs: modes detected, last 90 days", "% detected", syn)]


def render(plots: list[Plot], subtitle: str) -> str:
    figs = "".join(f'<figure id="plot-{i + 1}" style="position:absolute;left:20px;top:{TOP0 + i * GAP}px;'
                   f'margin:0;width:{W}px;height:{H}px">{svg(p)}</figure>' for i, p in enumerate(plots))
    height = TOP0 + len(plots) * GAP
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>Meshline hygiene report</title>'
            f'<style>body{{margin:0;background:#fff;font-family:sans-serif;position:relative;height:{height}px}}'
            f'h1{{position:absolute;left:20px;top:10px;margin:0;font-size:22px;color:#222}}'
            f'p.sub{{position:absolute;left:20px;top:44px;margin:0;font-size:12px;color:#666}}</style></head>'
            f'<body><h1>Meshline hygiene report</h1><p class="sub">{html.escape(subtitle)}</p>{figs}</body></html>')


def write_report(settings: Settings, out: Path) -> Path:
    from assets.loading import Warehouse
    from assets.remediation.state import now

    wh = Warehouse(settings.warehouse_url, redaction_key=settings.key)
    plots = gather(wh)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(plots, f"generated {now():%Y-%m-%d %H:%M} UTC from the warehouse "
                                 f"({'DuckDB' if settings.local else 'Postgres'})"))
    return out
