"""The peer baseline: dlt's sql_database source loading crm_opportunities incrementally (cursor
updated_at, merge on opportunity_id, pyarrow backend) into DuckDB or Postgres, with no row-level
validation. Runs in a virtual environment of its own (`bench.run` creates it): Meshline never depends
on dlt.

    python dlt_baseline.py SOURCE_URL duckdb WORKDIR
    python dlt_baseline.py SOURCE_URL postgres WORKDIR DEST_POSTGRES_URL

Prints one JSON line: rows loaded and the load's seconds (imports excluded).
"""

import json
import sys
import time

import dlt
from dlt.sources.sql_database import sql_table


def main(source_url: str, dest: str, workdir: str, dest_url: str | None = None) -> None:
    table = sql_table(credentials=source_url, table="crm_opportunities", backend="pyarrow",
                      incremental=dlt.sources.incremental("updated_at"))
    table.apply_hints(primary_key="opportunity_id", write_disposition="merge")
    if dest == "duckdb":
        destination = dlt.destinations.duckdb(f"{workdir}/dlt.duckdb")
    else:
        destination = dlt.destinations.postgres(dest_url)
    pipeline = dlt.pipeline(pipeline_name="meshline_bench", destination=destination, dataset_name="bench",
                            pipelines_dir=f"{workdir}/pipelines")
    t0 = time.perf_counter()
    info = pipeline.run(table)
    seconds = time.perf_counter() - t0
    rows = pipeline.last_trace.last_normalize_info.row_counts.get("crm_opportunities", 0)
    print(json.dumps({"rows_loaded": rows, "seconds": round(seconds, 3), "loads": len(info.loads_ids)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
