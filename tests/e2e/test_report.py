"""`meshline report`: one static HTML file, rendered in headless Chromium (Debian's package, which
`make test` installs when missing); the screenshot shows each of the five plots with data drawn, and
the same report over an empty warehouse shows none — so the check can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import timedelta

import pytest

from assets.hygiene.report import GAP, PAD_B, PAD_L, PAD_R, PAD_T, TOP0, H, W, write_report
from assets.loading import Warehouse
from assets.loading.ddl import ensure_meta
from assets.remediation.state import CheckOutcome, ensure, now, record_check
from assets.settings import Settings

pytestmark = pytest.mark.slow
FLOWS = ("lead_handoff", "quote_to_cash", "subscription_updates")


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path:
        return path
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is not installed under CI: `make test` installs Debian's chromium first")
    # Justified skip: outside CI a developer may run pytest without `make test`; under CI it fails.
    pytest.skip("chromium is not installed (`make test` installs it)")


def _screenshot(chromium: str, html, png, tmp_path) -> list[int]:
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'chromium-profile'}", "--hide-scrollbars",
                    f"--window-size={W + 60},{TOP0 + 5 * GAP}", f"--screenshot={png}", html.as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(png).convert("RGB")
    counts = []
    for i in range(5):  # the plotting area of each figure: data is drawn in saturated colours only
        top = TOP0 + i * GAP
        box = (20 + PAD_L + 2, top + PAD_T, 20 + W - PAD_R - 2, top + H - PAD_B - 2)
        px = img.crop(box).get_flattened_data()
        counts.append(sum(1 for r, g, b in px if max(r, g, b) - min(r, g, b) > 80))
    return counts


def _state(url: str) -> None:
    wh = Warehouse(url)
    with wh.transaction() as tx:
        ensure(tx)
        ensure_meta(tx)
        tx.execute("CREATE SCHEMA IF NOT EXISTS marts")
        tx.execute("CREATE TABLE marts.hygiene_scorecard (flow TEXT, partition_key TEXT, rows_read BIGINT,"
                   " dead_letters BIGINT, reconciliation_failures BIGINT, freshness_lag_hours DOUBLE PRECISION)")
        for d in range(6):
            for k, flow in enumerate(FLOWS):
                tx.execute("INSERT INTO marts.hygiene_scorecard VALUES (?, ?, 100, ?, ?, ?)",
                           (flow, f"2026-03-{10 + d:02d}", 2 + (d + k) % 4, (d * (k + 1)) % 5, 0.5 + k + d % 3))
                # the reconciliation plot reads the rules' own findings
                tx.execute("INSERT INTO meshline.rule_findings (flow, rule, kind, a_asset, b_asset, partition_key,"
                           " checked, failing, pending, sample_keys, critical, run_id, evaluated_at)"
                           " VALUES (?, 'r', 'presence', 'a', 'b', ?, 50, ?, 0, '[]', false, 'r', ?)",
                           (flow, f"2026-03-{10 + d:02d}", (d * (k + 1)) % 5, now()))
        for i in range(4):
            t = now() - timedelta(days=10 * i)
            tx.execute("INSERT INTO meshline.synthetic_runs VALUES (?, ?, ?, 9, ?, 0, 'passed')",
                       (f"syn-{i}", t, t, 9 - (i % 2)))
    for sev, minutes in (("critical", 90), ("standard", 400)):
        for passed, at in ((False, now() - timedelta(minutes=minutes)), (True, now())):
            record_check(wh, CheckOutcome(flow="lead_handoff", contract="crm_leads", contract_severity=sev,
                                          asset="crm_leads", check_name=f"c_{sev}", partition_key="2026-03-11",
                                          passed=passed, severity="ERROR", remediable=True, description="x",
                                          run_id="r"), at=at)


def test_each_plot_draws_its_data_offline(chromium, tmp_path):
    url = f"duckdb:///{tmp_path / 'wh.duckdb'}"
    _state(url)
    html = write_report(Settings(home=tmp_path, warehouse_url=url), tmp_path / "report.html")
    text = html.read_text()
    assert "<script" not in text and "src=" not in text and "href=" not in text and "@import" not in text
    assert text.count("<svg") == 5 and "no data yet" not in text
    drawn = _screenshot(chromium, html, tmp_path / "report.png", tmp_path)
    assert all(n > 150 for n in drawn), f"saturated pixels per plot: {drawn}"

    empty_url = f"duckdb:///{tmp_path / 'empty.duckdb'}"
    empty = write_report(Settings(home=tmp_path, warehouse_url=empty_url), tmp_path / "empty.html")
    assert _screenshot(chromium, empty, tmp_path / "empty.png", tmp_path) == [0, 0, 0, 0, 0]
