"""The hash-chained audit log on DuckDB and Postgres: `meshline audit-log verify` finds an edited, a
deleted and a reordered row; retention (90..365 days) prunes old rows and the chain still verifies."""

from __future__ import annotations

from datetime import timedelta

import pytest

from assets.loading import Warehouse
from assets.remediation.state import audit, now, prune_audit_log, verify_audit_log
from assets.settings import PROJECT_ROOT
from orchestration.cli import main
from orchestration.cli.ops import audit_log


def _fill(wh, n=6, start=None):
    start = start or now()
    with wh.transaction() as tx:
        for i in range(n):
            audit(tx, "test", "dlq.resolve", f"dl-{i}", {"note": f"n{i}"}, start + timedelta(minutes=i))


@pytest.fixture
def wh(warehouse_url, monkeypatch):
    monkeypatch.setenv("MESHLINE_WAREHOUSE_URL", warehouse_url)
    w = Warehouse(warehouse_url)
    _fill(w)
    return w


def test_intact_chain_verifies(wh, capsys):
    assert verify_audit_log(wh) == []
    assert audit_log(["verify"]) == 0 and "intact: 6 row(s)" in capsys.readouterr().out


def test_an_edited_row_is_found(wh, capsys):
    with wh.transaction() as tx:
        tx.execute("UPDATE meshline.audit_log SET details = '{\"note\": \"nothing happened\"}' WHERE seq = 3")
    assert verify_audit_log(wh) == ["row 3: content does not match its hash (edited)"]
    assert audit_log(["verify"]) == 1 and "TAMPERED" in capsys.readouterr().out


def test_a_deleted_row_is_found(wh):
    with wh.transaction() as tx:
        tx.execute("DELETE FROM meshline.audit_log WHERE seq = 4")
    problems = verify_audit_log(wh)
    assert any("row 5: expected seq 4" in p for p in problems) and any("does not follow" in p for p in problems)


def test_reordered_rows_are_found(wh):
    with wh.transaction() as tx:  # swap rows 2 and 3 by their sequence numbers
        tx.execute("UPDATE meshline.audit_log SET seq = 1000 WHERE seq = 2")
        tx.execute("UPDATE meshline.audit_log SET seq = 2 WHERE seq = 3")
        tx.execute("UPDATE meshline.audit_log SET seq = 3 WHERE seq = 1000")
    problems = verify_audit_log(wh)
    assert any(p.startswith("row 2:") for p in problems) and any(p.startswith("row 3:") for p in problems)


def test_retention_prunes_old_rows_and_keeps_the_chain_verifiable(warehouse_url, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MESHLINE_WAREHOUSE_URL", warehouse_url)
    wh = Warehouse(warehouse_url)
    _fill(wh, 4, start=now() - timedelta(days=120))
    _fill(wh, 3)
    assert prune_audit_log(wh, 90, "test") == 4
    assert verify_audit_log(wh) == []
    with wh.session() as s:
        actions = [a for (a,) in s.query("SELECT action FROM meshline.audit_log ORDER BY seq")]
    assert actions == ["dlq.resolve"] * 3 + ["audit_log.prune"]
    with pytest.raises(ValueError, match="between 90 and 365"):
        prune_audit_log(wh, 30, "test")
    config = tmp_path / "meshline.yaml"
    config.write_text((PROJECT_ROOT / "meshline.yaml").read_text().replace("audit_days: 365", "audit_days: 400"))
    monkeypatch.setenv("MESHLINE_CONFIG", str(config))
    assert main(["audit-log", "prune"]) == 2
    assert "retention.audit_days: expected 90 to 365 days, got 400" in capsys.readouterr().err
    monkeypatch.delenv("MESHLINE_CONFIG")
    assert audit_log(["prune", "--days", "365"]) == 0 and "pruned 0" in capsys.readouterr().out
