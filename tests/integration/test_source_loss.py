"""A source lost in the middle of an extract is a transient fault: the load says so (`SourceUnreachable`,
naming the boundary), and the asset's retry policy loads the partition on its next attempt."""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg
import psycopg2
import pytest

from assets.flows.boundary import boundary_asset
from assets.loading import Warehouse, load_partition
from assets.loading.watermark import daily_window
from assets.resources import SourcesResource, WarehouseResource
from assets.sources import SqlSource
from expectations import load_contract
from expectations.reasons import SourceUnreachable

pytestmark = pytest.mark.postgres

DAY = datetime(2026, 3, 10)
# The extract's first row ends its own connection, once: a fuse connection holds advisory lock 4242;
# the first reader, finding it held, ends the fuse and itself (sources are read in read-only
# transactions, so the fuse is a lock, never a write).
DIES_ONCE = """
CREATE SCHEMA src;
CREATE FUNCTION src.first_read_dies() RETURNS boolean AS $$
BEGIN
    IF NOT pg_try_advisory_lock_shared(4242) THEN
        PERFORM pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND granted;
        PERFORM pg_terminate_backend(pg_backend_pid());
    END IF;
    RETURN true;
END $$ LANGUAGE plpgsql VOLATILE;
CREATE TABLE src.marketing_leads AS SELECT g::BIGINT AS row_id, g::BIGINT AS lead_id,
    'lead' || g || '@example.com' AS email, NULL::TEXT AS first_name, NULL::TEXT AS last_name, 'acme' AS company,
    NULL::TEXT AS campaign, TIMESTAMP '2026-03-10' AS mql_at, TIMESTAMP '2026-03-10' + g * INTERVAL '1 minute' AS updated_at
FROM generate_series(1, 50) AS g;
"""
QUERY = "SELECT * FROM src.marketing_leads WHERE src.first_read_dies()"


@pytest.fixture
def dying_source(pg_url):
    dsn = pg_url.replace("postgresql+psycopg2://", "postgresql://")
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute(DIES_ONCE)
    conn.close()
    fuse = psycopg2.connect(dsn)
    fuse.autocommit = True
    with fuse.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(4242)")
    yield pg_url
    fuse.close()


def test_a_connection_lost_mid_extract_is_unreachable_and_names_the_boundary(dying_source):
    source = SqlSource(dying_source, "marketing_leads", "marketing_automation", query=QUERY)
    with pytest.raises(SourceUnreachable, match="marketing_automation.marketing_leads was lost mid-extract"):
        load_partition(Warehouse(dying_source), source, load_contract("marketing_leads"), partition_key="2026-03-10",
                       window=daily_window("2026-03-10"), run_id="r1", lookback=timedelta(hours=6))
    assert not Warehouse(dying_source).table_exists("meshline", "load_log")  # nothing committed, not even DDL


def test_the_asset_retries_a_lost_source_and_loads_the_partition(dying_source):
    contract = load_contract("marketing_leads")
    asset = boundary_asset(contract, dg.DailyPartitionsDefinition(start_date="2026-03-01"), pool=None,
                           lookback=timedelta(hours=6))
    resources = {"warehouse": WarehouseResource(url=dying_source), "sources": SourcesResource(boundaries={
        "marketing_leads": {"kind": "sql", "url": dying_source, "query": QUERY}})}
    instance = dg.DagsterInstance.ephemeral()
    res = dg.materialize([asset], partition_key="2026-03-10", resources=resources, instance=instance)
    assert res.success
    retries = [e for e in res.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert len(retries) == 1 and "lost mid-extract" in str(retries[0].event_specific_data)
    md = res.get_asset_materialization_events()[0].materialization.metadata
    assert md["rows_loaded"].value == 50
