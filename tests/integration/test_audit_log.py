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
from tests.conftest import TEST_REDACTION_KEY


def _fill(wh, n=6, start=None):
    start = start or now()
    with wh.transaction() as tx:
        for i in range(n):
            audit(tx, "test", "dlq.resolve", f"dl-{i}", {"note": f"n{i}"}, start + timedelta(minutes=i))


@pytest.fixture
def wh(warehouse_url, monkeypatch):
    monkeypatch.setenv("MESHLINE_WAREHOUSE_URL", warehouse_url)
    w = Warehouse(warehouse_url, redaction_key=TEST_REDACTION_KEY.encode())  # the key the CLI reads
    _fill(w)
    return w


def test_intact_chain_verifies(wh, capsys):
    assert verify_audit_log(wh) == []
    assert audit_log(["verify"]) == 0 and "intact: 6 row(s)" in capsys.readouterr().out


def test_an_edited_row_is_found(wh, capsys):
    with wh.transaction() as tx:
        tx.execute("UPDATE meshline.audit_log SET details = '{\"note\": \"nothing happened\"}' WHERE seq = 3")
    assert verify_audit_log(wh) == ["row 3: content does not match its hash (edited, or recomputed without the key)"]
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


def _recompute_unkeyed(wh, from_seq: int) -> None:
    """What an attacker with database access and no key does: edit a row and recompute every hash after it."""
    import hashlib
    import json

    with wh.transaction() as tx:
        rows = tx.query("SELECT seq, logged_at, actor, action, target, details, prev_hash FROM meshline.audit_log"
                        " ORDER BY seq")
        prev = None
        for seq, at, actor, action, target, details, _prev_hash in rows:
            if seq < from_seq:
                prev = tx.scalar("SELECT row_hash FROM meshline.audit_log WHERE seq = ?", (seq,))
                continue
            if seq == from_seq:
                details = '{"note": "nothing happened"}'
            body = json.dumps([prev, seq, at.isoformat(), actor, action, target, details], separators=(",", ":"))
            h = hashlib.sha256(body.encode()).hexdigest()
            tx.execute("UPDATE meshline.audit_log SET details = ?, prev_hash = ?, row_hash = ? WHERE seq = ?",
                       (details, prev, h, seq))
            prev = h


def test_an_edit_with_the_chain_recomputed_is_found(wh):
    _recompute_unkeyed(wh, 3)
    problems = verify_audit_log(wh)
    assert any(p.startswith("row 3:") and "recomputed" in p for p in problems), problems


def test_cut_newest_rows_are_found_against_an_exported_head(wh, capsys):
    assert audit_log(["head"]) == 0
    head = capsys.readouterr().out.strip()
    assert head.startswith("6:k1:")
    with wh.transaction() as tx:
        tx.execute("DELETE FROM meshline.audit_log WHERE seq >= 5")
    assert verify_audit_log(wh) == []  # the chain alone cannot tell
    assert verify_audit_log(wh, head=head) == ["row 6 (the exported head) is missing: the newest rows were cut"]
    assert audit_log(["verify", "--head", head]) == 1 and "TAMPERED" in capsys.readouterr().out
    _fill(wh, 2)  # rows written again under the cut seqs do not match the head either
    assert verify_audit_log(wh, head=head) == ["row 6: differs from the exported head"]


def test_a_forged_anchor_is_found(wh):
    with wh.transaction() as tx:  # cut the oldest rows and plant an anchor the rest seems to follow
        prev = tx.scalar("SELECT prev_hash FROM meshline.audit_log WHERE seq = 4")
        tx.execute("DELETE FROM meshline.audit_log WHERE seq < 4")
        tx.execute("INSERT INTO meshline.audit_log_anchor (anchor_id, seq, row_hash, pruned_at) VALUES (1, 3, ?, ?)",
                   (prev, now()))
    assert verify_audit_log(wh) == ["anchor (seq 3): not written by Meshline's pruning (forged or edited)"]


def test_another_key_cannot_verify_the_chain(warehouse_url, monkeypatch):
    w = Warehouse(warehouse_url)
    _fill(w)
    other = Warehouse(warehouse_url, redaction_key=b"another-key-of-32-characters!!!!")
    assert len(verify_audit_log(other)) == 6
