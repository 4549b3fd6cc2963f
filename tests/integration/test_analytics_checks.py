"""Volume, freshness and partition-gap checks on every boundary, on DuckDB and Postgres."""

from __future__ import annotations

from tests.helpers import day_keys, materialize_day


def _evals(res, boundary="marketing_leads"):
    return {e.check_name.replace(f"_{boundary}", ""): e for e in res.get_asset_check_evaluations()
            if e.check_name.endswith(boundary)}


def test_volume_freshness_and_gaps(warehouse_url, sandbox):
    keys = day_keys(sandbox.ground_truth())
    first = _evals(materialize_day(warehouse_url, sandbox, keys[0]))
    assert first["volume"].passed and "too few" in first["volume"].description
    assert first["freshness"].passed and first["partition_gaps"].passed
    # skip a day: the gap check names it
    ev = _evals(materialize_day(warehouse_url, sandbox, keys[2]))
    assert not ev["partition_gaps"].passed
    assert ev["partition_gaps"].metadata["missing_partitions"].value == [keys[1]]
    materialize_day(warehouse_url, sandbox, keys[1])
    ev = _evals(materialize_day(warehouse_url, sandbox, keys[3]))
    assert ev["partition_gaps"].passed and ev["volume"].passed
    assert ev["volume"].metadata["trailing_partitions"].value == 3

    # the source stops delivering after the last simulated day: volume collapses, and two days on the
    # newest change is older than the 26 h freshness SLO
    from datetime import date, timedelta

    after = [(date.fromisoformat(keys[3]) + timedelta(days=i)).isoformat() for i in (1, 2)]
    materialize_day(warehouse_url, sandbox, after[0])
    ev = _evals(materialize_day(warehouse_url, sandbox, after[1]))
    assert not ev["volume"].passed and ev["volume"].metadata["rows_read"].value == 0
    assert not ev["freshness"].passed and ev["freshness"].metadata["lag_hours"].value > 26
    assert ev["partition_gaps"].passed
