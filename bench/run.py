"""`make bench` (`python -m bench.run`): what users wait for, each beside a baseline measured in the same run.

    1. bench/source.py writes crm_opportunities (1.01 M rows) into a Postgres source database
    2. full load into a fresh DuckDB warehouse, then into a fresh Postgres warehouse (three times each,
       each into an empty warehouse; the median reported, with the highest peak RSS)
    3. the peer baseline on the same table in the same run: bench/dlt_baseline.py (dlt's sql_database
       source, pyarrow backend, no row validation) into DuckDB and into Postgres, from a virtual
       environment of its own that the bench creates (.bench/dlt-venv): Meshline never depends on dlt
    4. the full DuckDB load of a tenth of the rows (memory flatness), contract validation alone
       (seconds per million rows), and whole-process start-up of the commands and of the Dagster
       definitions beside `import dagster_dbt` (median of 5)
    5. a Dagster partition run: one day of lead_handoff on the simulated sources, its job executed as
       a run worker executes it (median of 3 fresh processes)
    6. the nightly hygiene over a year of the three flows at a mid-size organisation's volume
       (bench/year.py; `--no-year` skips it, `--year-only` runs only it)

Every load runs in its own process (so its peak RSS is its own) and prints one JSON line: target, phase,
rows_read, rows_loaded, rows_superseded, rows_dead_lettered, seconds (inside the process, from the start
of the load to its commit, imports excluded), rows_per_s, peak_rss_mb, wall_s (whole process). The lines
also go to .bench/results.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from assets.settings import PROJECT_ROOT
from bench.source import generate

BENCH_CONTRACT = Path(__file__).resolve().parent / "crm_opportunities.yml"
BENCH_DIR = Path(__file__).resolve().parent
PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"  # the server the bench's databases go to (--pg)
WINDOW = (datetime(1970, 1, 1), datetime(2100, 1, 1))


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg2://", "postgresql://")


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(_libpq(f"{PG}/postgres"))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql)
    conn.close()


def _recreate_db(name: str) -> str:
    _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    _admin(f"CREATE DATABASE {name}")
    return f"{PG}/{name}"


def load_once(target_url: str, source_url: str, phase: str) -> dict:
    """One load of the whole table (one window), in this process. Everything the load imports is
    imported first: the figure is the load's own time, imports excluded (as anchor_dlt.py measures),
    as in a Dagster run worker, where these modules are loaded before any asset runs."""
    import duckdb  # noqa: F401
    import pandas  # noqa: F401 - pyarrow.compute's fill_null imports it on first use
    import psycopg2  # noqa: F401
    import pyarrow.compute  # noqa: F401
    import sqlalchemy  # noqa: F401 - URL parsing

    from assets.loading import Warehouse, load_partition
    from assets.loading.watermark import Window
    from assets.sources import SqlSource
    from expectations.registry import load_contract

    contract = load_contract(BENCH_CONTRACT)
    source = SqlSource(source_url, "crm_opportunities", "crm")
    r = load_partition(Warehouse(target_url), source, contract, partition_key="all", window=Window(*WINDOW),
                       run_id=f"bench-{phase}", lookback=timedelta(hours=1), progress=lambda m: None)
    return {
        "target": "duckdb" if target_url.startswith("duckdb") else "postgres", "phase": phase,
        "rows_read": r.rows_read, "rows_loaded": r.rows_loaded, "rows_superseded": r.rows_superseded,
        "rows_dead_lettered": r.rows_dead_lettered, "seconds": round(r.seconds, 3),
        "rows_per_s": round(r.rows_read / r.seconds) if r.seconds else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }


def _settle() -> None:
    """Write out what earlier steps left in memory before a measured run starts: Postgres's dirty buffers
    (CHECKPOINT), then every dirty page the kernel holds (sync). Otherwise a load's first fsync pays for
    them: on ext4 a commit's journal flush writes out the data of files written just before it, so a
    DuckDB re-run on a fresh file copy spent ~35 ms of its commit flushing the copy."""
    _admin("CHECKPOINT")
    os.sync()


def _child(target_url: str, source_url: str, phase: str, what: str = "_load", *extra: str) -> dict:
    _settle()
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "bench.run", what, target_url, source_url, phase, *extra],
                         capture_output=True, text=True, cwd=PROJECT_ROOT)
    if out.returncode != 0:
        raise SystemExit(f"bench load failed ({target_url.split(':')[0]}, {phase}):\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    return result



def validate_once(source_url: str) -> dict:
    """Contract validation alone: the bench table read into memory first (not timed), then every row
    typed and evaluated against the benchmark contract, chunk by chunk, as the loader does."""
    import pyarrow.compute  # noqa: F401
    import sqlalchemy  # noqa: F401

    from assets.sources import SqlSource
    from expectations.registry import load_contract
    from expectations.rules import evaluate, rule_count

    contract = load_contract(BENCH_CONTRACT)
    source = SqlSource(source_url, "crm_opportunities", "crm")
    chunks = list(source.extract(contract.source_columns, contract.change_token, WINDOW[0], True, WINDOW[1],
                                 50_000))
    rows = sum(c.num_rows for c in chunks)
    evaluate(chunks[0].slice(0, 1000), contract)  # first use of each kernel, not the rule's cost
    t0 = time.perf_counter()
    invalid = sum(evaluate(c, contract).n_invalid for c in chunks)
    seconds = time.perf_counter() - t0
    return {"measure": "validation", "rows": rows, "rules": rule_count(contract), "rows_invalid": invalid,
            "seconds": round(seconds, 3), "seconds_per_million_rows": round(seconds / rows * 1e6, 3)}


def gx_once(source_url: str, workdir: str) -> dict:
    """The contract check's Great Expectations validation, as a run worker meets it: 500 rows in a fresh
    process (the import and the file context included), the same again warm, then the whole bench table.
    Data Docs are written as the check writes them."""
    import tempfile

    import pyarrow as pa

    from assets.sources import SqlSource
    from expectations.docs import DataDocs
    from expectations.registry import load_contract

    contract = load_contract(BENCH_CONTRACT)
    source = SqlSource(source_url, "crm_opportunities", "crm")
    frame = pa.concat_tables(list(source.extract(contract.source_columns, contract.change_token, WINDOW[0], True,
                                                 WINDOW[1], 50_000))).to_pandas()
    docs = DataDocs(Path(tempfile.mkdtemp(dir=workdir)))
    out: dict[str, Any] = {"measure": "gx_contract_check", "rows_large": len(frame)}
    for label, rows in (("cold_500_s", frame.head(500)), ("warm_500_s", frame.head(500)), ("large_s", frame)):
        t0 = time.perf_counter()
        result = docs.validate(rows, contract)
        out[label] = round(time.perf_counter() - t0, 3)
        out[f"{label[:-2]}_success"] = result.success
    return out


def demo_once(home: Path) -> dict:
    """`meshline demo` as `make demo` runs it after installation: a fresh MESHLINE_HOME, the embedded
    default, the shipped 14 days."""
    import shutil

    shutil.rmtree(home, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MESHLINE_", "DAGSTER_"))}
    env["MESHLINE_HOME"] = str(home)
    t0 = time.perf_counter()
    out = subprocess.run([str(Path(sys.executable).parent / "meshline"), "demo"], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, env=env)
    seconds = round(time.perf_counter() - t0, 1)
    return {"measure": "demo", "seconds": seconds, "success": out.returncode == 0, "target_max_s": 90,
            "target_met": out.returncode == 0 and seconds <= 90}


def _backfills(work: Path, targets: str) -> list[dict]:
    """bench/backfill.py: 90 days of the three flows as one backfill, per target warehouse."""
    from bench.backfill import measure as backfill

    os.environ.setdefault("MESHLINE_REDACTION_KEY", "meshline-bench-redaction-key-0001")  # for Postgres
    out = []
    for target in targets.split(","):
        print(f"a 90-day backfill launched as the UI does, {target} ...", file=sys.stderr, flush=True)
        variants = ("ranged", "per_partition", "loader")
        urls = ({v: f"duckdb:///{work / 'backfill' / target / v / 'warehouse.duckdb'}" for v in variants}
                if target == "duckdb" else {v: _recreate_db(f"meshline_bench_backfill_{v}") for v in variants})
        out.append({"tool": "meshline", **backfill(work / "backfill", target, urls)})
    return out


def _dev(work: Path) -> dict:
    from bench.dev import measure as dev

    return {"tool": "meshline", **dev(work / "dev")}


def _median(values: list[float]) -> float:
    return round(sorted(values)[len(values) // 2], 3)


def _median_wall(cmd: list[str], env: dict, runs: int) -> float:
    # `meshline audit` exits 1 when a critical item is N
    return _median([_timed(cmd, env, ok=(0, 1))[0] for _ in range(runs)])


# What `dagster dev`, the daemon and every run worker pay: the code location's `defs` built as Dagster's
# loader builds it (the dbt manifest prepared once, as a deployment does), timed inside the process.
_IN_PROCESS = "import time; _t = time.perf_counter(); {body}; print(time.perf_counter() - _t)"
_LOAD_DEFS = _IN_PROCESS.format(body="from orchestration.definitions import defs; "
                                     "defs().get_repository_def().get_all_jobs()")
_IMPORT_DAGSTER_DBT = _IN_PROCESS.format(body="import dagster_dbt")


def _timed(cmd: list[str], env: dict, ok: tuple[int, ...] = (0,)) -> tuple[float, str]:
    """(whole-process wall seconds, what the process printed on its last line)."""
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=PROJECT_ROOT)
    wall = time.perf_counter() - t0
    if out.returncode not in ok:
        raise SystemExit(f"start-up measurement failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
    lines = out.stdout.strip().splitlines()
    return wall, lines[-1] if lines else ""


def startup(home: Path, warehouse_url: str, runs: int = 5) -> list[dict]:
    """Whole-process wall time, median of `runs`, of the commands that validate nothing; and loading the
    Dagster definitions beside `import dagster_dbt` alone, alternately in the same run, each as
    whole-process wall time and as time inside the process. The definitions' process freezes what it
    built out of the garbage collector's reach (`orchestration.definitions.defs`), which makes its exit
    cheaper than the bare import's: the in-process difference leaves exits out, and the target counts as
    met only when both differences are within it."""
    env = {**os.environ, "MESHLINE_HOME": str(home), "MESHLINE_WAREHOUSE_URL": warehouse_url}
    bin_dir = Path(sys.executable).parent
    meshline = str(bin_dir / "meshline")
    _timed([sys.executable, "-c", _LOAD_DEFS], env)  # prepares the dbt manifest once, as a deployment does
    out = []
    for name, args in (("meshline --help", ["--help"]), ("meshline dlq list", ["dlq", "list"]),
                       ("meshline incidents", ["incidents"]), ("meshline contracts list", ["contracts", "list"]),
                       ("meshline audit-log verify", ["audit-log", "verify"]), ("meshline audit", ["audit"])):
        wall = _median_wall([meshline, *args], env, runs)
        out.append({"measure": "startup", "command": name, "wall_s": wall, "target_max_s": 1.5,
                    "target_met": wall <= 1.5})
    bare, defs = [], []
    for _ in range(runs):
        bare.append(_timed([sys.executable, "-c", _IMPORT_DAGSTER_DBT], env))
        defs.append(_timed([sys.executable, "-c", _LOAD_DEFS], env))
    wall, bare_wall = _median([w for w, _ in defs]), _median([w for w, _ in bare])
    inside, bare_inside = _median([float(s) for _, s in defs]), _median([float(s) for _, s in bare])
    out.append({"measure": "startup", "command": "load Dagster definitions", "wall_s": wall,
                "import_dagster_dbt_s": bare_wall, "over_dagster_dbt_s": round(wall - bare_wall, 3),
                "in_process_s": inside, "import_dagster_dbt_in_process_s": bare_inside,
                "in_process_over_dagster_dbt_s": round(inside - bare_inside, 3), "target_max_over_s": 1.5,
                "target_met": max(wall - bare_wall, inside - bare_inside) <= 1.5})
    return out


DLT_REQUIREMENTS = ["dlt[duckdb,postgres,sql_database]", "sqlalchemy", "psycopg2-binary", "pyarrow", "pandas"]
# Runs anchor_dlt.py as it is, then reports the process's peak RSS beside its JSON line.
_DLT_WRAPPER = ("import json, resource, runpy, sys, time; t0 = time.perf_counter(); anchor = sys.argv[1]; "
                "sys.argv = sys.argv[1:]; runpy.run_path(anchor, run_name='__main__'); "
                "print(json.dumps({'peak_rss_mb': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024), "
                "'in_process_s': round(time.perf_counter() - t0, 2)}))")


def dlt_python(work: Path) -> Path:
    """The dlt baseline's own virtual environment (created once)."""
    venv = work / "dlt-venv"
    py = venv / "bin" / "python"
    import hashlib

    stamp = venv / f".installed-{hashlib.sha256(' '.join(DLT_REQUIREMENTS).encode()).hexdigest()[:12]}"
    if not stamp.exists():
        print(f"creating the dlt baseline's virtual environment in {venv} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", *DLT_REQUIREMENTS], check=True,
                       stdout=sys.stderr)
        stamp.touch()
    return py


def run_dlt(py: Path, source_url: str, dest: str, work: Path, dest_url: str | None = None) -> dict:
    anchor = BENCH_DIR / "dlt_baseline.py"
    cmd = [str(py), "-c", _DLT_WRAPPER, str(anchor), source_url, dest, str(work / f"dlt-{dest}")]
    if dest_url:
        cmd.append(dest_url)
    _settle()
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    if out.returncode != 0:
        raise SystemExit(f"dlt baseline failed ({dest}):\n{out.stderr[-3000:]}")
    lines = [json.loads(x) for x in out.stdout.strip().splitlines() if x.startswith("{")]
    rec = {"tool": "dlt-pyarrow", "target": dest, "phase": "full", **lines[0], **lines[-1],
           "wall_s": round(time.perf_counter() - t0, 2)}
    return rec


def _with_password(url: str) -> str:
    """dlt insists on a password in Postgres credentials; under trust auth any will do."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None and parts.username:
        host = (parts.hostname or "127.0.0.1") + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=f"{parts.username}:{os.environ.get('PGPASSWORD', 'unused')}@{host}")
    return urlunsplit(parts)


def _remove_duckdb(path: Path) -> None:

    for f in (path, Path(str(path) + ".wal")):
        f.unlink(missing_ok=True)


ABLATIONS = ("gc_freeze",)  # speed-only paths that stay (bench/year.py's _ablate)


def partition_run(home: Path, rounds: int = 3) -> dict:
    """One day of lead_handoff on the simulated sources, run as a run worker runs it: a fresh process that
    loads the code location and executes the flow's job for the partition. The first run loads the day;
    then, `rounds` times in alternation, the re-run a nightly or a compensation makes as shipped and with
    each speed-only path switched off. Medians of wall time, each beside the shipped one."""
    from assets.sandbox import LeadHandoffSandbox
    from bench.year import run_in_fresh_process, year_settings

    end = datetime.now().date() - timedelta(days=1)
    settings = year_settings(home, end - timedelta(days=6))
    truth = LeadHandoffSandbox(settings.sandbox_dir).generate(end=end, days=7, leads_per_day=2_740, seed=7)
    request = {"run_key": "bench", "partition_key": end.isoformat(), "tags": {},
               "assets": ["raw/marketing_leads", "raw/crm_leads"]}
    first = run_in_fresh_process(settings, request)
    walls: dict[str, list[float]] = {v: [] for v in ("shipped", *ABLATIONS)}
    loads: dict[str, list[float]] = {v: [] for v in walls}
    for _ in range(rounds):
        for variant in walls:
            rec = run_in_fresh_process(settings, {**request, "ablate": [] if variant == "shipped" else [variant]})
            if not rec["success"]:
                raise SystemExit(f"partition run failed ({variant})")
            walls[variant].append(rec["wall_s"])
            loads[variant].append(rec["code_load_s"])
    shipped = _median(walls["shipped"])
    return {"measure": "partition_run", "flow": "lead_handoff", "mqls": truth["mqls"], "checks": first["checks"],
            "first_run_wall_s": first["wall_s"], "wall_s": shipped, "runs_wall_s": walls["shipped"],
            "code_load_s": _median(loads["shipped"]),
            "without": {v: {"wall_s": _median(walls[v]), "code_load_s": _median(loads[v]),
                            "gain": round(1 - shipped / _median(walls[v]), 3)} for v in ABLATIONS}}


def _drop(copy_url: str) -> None:
    if copy_url.startswith("duckdb:///"):
        _remove_duckdb(Path(copy_url[len("duckdb:///"):]))
    else:
        _admin(f"DROP DATABASE IF EXISTS {copy_url.rsplit('/', 1)[1]} WITH (FORCE)")


def _full_median(target: str, url: str, source_url: str, work: Path, runs: int = 3) -> dict:
    """The full load, `runs` times, each in a fresh process into an empty warehouse: the first into `url`
    (the warehouse the re-runs start from), the others into scratch ones, dropped after. The run with the
    median time is reported, every run's seconds beside it, and the highest peak RSS of them: the full
    load is the denominator of the re-run's ratio, and on these machines one run can come at a moment
    a quarter faster than the others."""
    recs = [_child(url, source_url, "full")]
    for i in range(1, runs):
        if target == "duckdb":
            scratch = work / f"bench_warehouse_full{i}.duckdb"
            _remove_duckdb(scratch)
            scratch_url = f"duckdb:///{scratch}"
        else:
            scratch_url = _recreate_db(f"meshline_bench_wh_full{i}")
        recs.append(_child(scratch_url, source_url, "full"))
        _drop(scratch_url)
    median = sorted(recs, key=lambda r: r["seconds"])[len(recs) // 2]
    return {**median, "runs_seconds": [r["seconds"] for r in recs],
            "peak_rss_mb": max(r["peak_rss_mb"] for r in recs)}


def main(argv: list[str] | None = None) -> int:
    global PG
    p = argparse.ArgumentParser(prog="make bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="distinct opportunities (default 1,000,000)")
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / ".bench" / "results.jsonl")
    p.add_argument("--targets", default="duckdb,postgres")
    p.add_argument("--pg", default=PG, help=f"the Postgres server for the bench's databases (default {PG})")
    p.add_argument("--no-dlt", action="store_true", help="skip the dlt peer baseline")
    p.add_argument("--no-year", action="store_true",
                   help="skip the year-volume nightly hygiene (bench/year.py; about 20 min)")
    p.add_argument("--year-only", action="store_true", help="only the year-volume nightly hygiene")
    p.add_argument("--no-demo", action="store_true", help="skip timing `meshline demo` in a fresh home (about 4 min)")
    p.add_argument("--partition-only", action="store_true", help="only the Dagster partition run")
    p.add_argument("--daemon-only", action="store_true",
                   help="only the partition run launched through dagster-daemon (bench/daemon.py)")
    p.add_argument("--no-backfill", action="store_true",
                   help="skip the 90-day backfill launched as the UI does (bench/backfill.py; about 15 min)")
    p.add_argument("--backfill-only", action="store_true", help="only the 90-day backfill, on --targets")
    p.add_argument("--no-dev", action="store_true", help="skip `make dev` after the demo (bench/dev.py; about 4 min)")
    p.add_argument("--dev-only", action="store_true", help="only `make dev` after the demo")
    args = p.parse_args(argv)
    args.out = args.out.resolve()  # its folder is the bench's work folder, and the dlt run's cwd
    PG = args.pg
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = args.out.parent

    if args.backfill_only or args.dev_only:
        with args.out.open("a") as fh:
            for rec in (_backfills(work, args.targets) if args.backfill_only else [_dev(work)]):
                print(json.dumps(rec), flush=True)
                fh.write(json.dumps(rec) + "\n")
        return 0
    if args.daemon_only or args.partition_only:
        from bench.daemon import measure

        rec = {"tool": "meshline", **(measure(work / "daemon") if args.daemon_only
                                      else partition_run(work / "partition"))}
        print(json.dumps(rec), flush=True)
        with args.out.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        return 0
    if args.year_only:
        from bench.year import run_year

        with args.out.open("a") as fh:
            def emit_year(rec: dict) -> None:
                print(json.dumps(rec), flush=True)
                fh.write(json.dumps({"tool": "meshline", **rec}) + "\n")

            run_year(work / "year", out=emit_year)
        return 0
    print(f"generating the source table ({args.rows:,} opportunities) ...", file=sys.stderr, flush=True)
    source_url = _recreate_db("meshline_bench_src")
    generate(_libpq(source_url), args.rows)
    targets = {}
    for t in args.targets.split(","):
        if t == "duckdb":
            path = work / "bench_warehouse.duckdb"
            _remove_duckdb(path)
            targets[t] = f"duckdb:///{path}"
        elif t == "postgres":
            targets[t] = _recreate_db("meshline_bench_wh")
        else:
            p.error(f"unknown target {t!r}")

    results = []
    with args.out.open("w") as fh:
        def emit(rec: dict) -> None:
            results.append(rec)
            line = json.dumps(rec)
            print(line, flush=True)
            fh.write(line + "\n")

        for t, url in targets.items():
            rec = {"tool": "meshline", **_full_median(t, url, source_url, work)}
            if t == "duckdb":  # issue #7, target 1: peak RSS at most 500 MiB
                rec["target_peak_rss_max_mb"], rec["target_rss_met"] = 500, rec["peak_rss_mb"] <= 500
            emit(rec)
        if not args.no_dlt:
            py = dlt_python(work)
            targets_max = {"duckdb": 0.8, "postgres": 1.0}  # issue #7: at most this fraction of dlt's time
            for t in targets:
                dest_url = _with_password(_libpq(_recreate_db("meshline_bench_dlt"))) if t == "postgres" else None
                rec = run_dlt(py, source_url, t, work, dest_url)
                ours = next(r for r in results if r["target"] == t and r["phase"] == "full")
                rec["meshline_seconds"] = ours["seconds"]
                rec["ratio_meshline_to_dlt"] = round(ours["seconds"] / rec["seconds"], 3)
                rec["wall_ratio_meshline_to_dlt"] = round(ours["wall_s"] / rec["wall_s"], 3)
                rec["target_ratio_max"] = targets_max.get(t)
                rec["target_met"] = ours["seconds"] <= targets_max.get(t, 1.0) * rec["seconds"]  # unrounded
                emit(rec)
        if "duckdb" in targets:
            # Memory flat in volume: the same load of a tenth of the rows, into a fresh warehouse.
            tenth = args.rows // 10
            print(f"generating a tenth of the table ({tenth:,} opportunities) ...", file=sys.stderr, flush=True)
            small_src = _recreate_db("meshline_bench_src_tenth")
            generate(_libpq(small_src), tenth)
            small_wh = work / "bench_warehouse_tenth.duckdb"
            _remove_duckdb(small_wh)
            small = _child(f"duckdb:///{small_wh}", small_src, "full_tenth")
            _admin("DROP DATABASE IF EXISTS meshline_bench_src_tenth WITH (FORCE)")
            big = next(r for r in results if r["target"] == "duckdb" and r["phase"] == "full")
            ratio = round(big["peak_rss_mb"] / small["peak_rss_mb"], 3)
            emit({"tool": "meshline", "measure": "memory_flatness", "rows_small": small["rows_read"],
                  "rows_large": big["rows_read"], "peak_rss_small_mb": small["peak_rss_mb"],
                  "peak_rss_large_mb": big["peak_rss_mb"], "ratio": ratio, "target_ratio_max": 1.5,
                  "target_met": big["peak_rss_mb"] <= 1.5 * small["peak_rss_mb"]})
        gx = _child("", source_url, "gx", "_gx", str(work))
        load = next((r for r in results if r.get("target") == "duckdb" and r.get("phase") == "full"), None)
        gx.update(target_warm_500_max_s=0.5, target_met=gx["warm_500_s"] <= 0.5 and gx["cold_500_s"] <= 0.5
                  and (load is None or gx["large_s"] <= load["seconds"]),
                  load_seconds=load["seconds"] if load else None)
        emit({"tool": "meshline", **gx})
        rec = _child("", source_url, "validate", what="_validate")
        rec["target_max_s_per_million"] = 5.0
        rec["target_met"] = rec["seconds_per_million_rows"] <= 5.0
        emit({"tool": "meshline", **rec})
        if "duckdb" in targets:
            print("measuring start-up (median of 5 whole-process runs each) ...", file=sys.stderr, flush=True)
            for rec in startup(work / "home", targets["duckdb"]):
                emit({"tool": "meshline", **rec})
        if "duckdb" in targets:
            print("a Dagster partition run (median of 3 fresh processes) ...", file=sys.stderr, flush=True)
            emit({"tool": "meshline", **partition_run(work / "partition")})
            from bench.daemon import measure

            print("a partition queued through dagster-daemon, shipped executor and Dagster's default ...",
                  file=sys.stderr, flush=True)
            emit({"tool": "meshline", **measure(work / "daemon")})
        if not args.no_demo:
            print("meshline demo in a fresh home ...", file=sys.stderr, flush=True)
            emit({"tool": "meshline", **demo_once(work / "demo")})
        if not args.no_dev:
            print("make dev after the demo ...", file=sys.stderr, flush=True)
            emit(_dev(work))
        if not args.no_backfill:
            for rec in _backfills(work, args.targets):
                emit(rec)
        if not args.no_year:
            from bench.year import run_year

            run_year(work / "year", out=lambda rec: emit({"tool": "meshline", **rec}))
    met = [r for r in results if "target_met" in r]
    print(f"results: {args.out}; targets met {sum(r['target_met'] for r in met)}/{len(met)}"
          + "".join(f"; not met: {r.get('measure') or r['target']} {r.get('phase') or r.get('command') or ''}"
                    for r in met if not r["target_met"])
          + "".join(f"; not met: duckdb peak RSS {r['peak_rss_mb']} MiB" for r in results
                    if r.get("target_rss_met") is False), file=sys.stderr)
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_load":
        print(json.dumps(load_once(sys.argv[2], sys.argv[3], sys.argv[4])))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "_validate":
        print(json.dumps(validate_once(sys.argv[3])))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "_gx":
        print(json.dumps(gx_once(sys.argv[3], sys.argv[5])))
        sys.exit(0)
    sys.exit(main())
