"""10,000 fuzzed records through each source kind (JSONL and CSV file drops, an HTTP API, DuckDB and
Postgres tables whose columns are all text), into DuckDB and Postgres warehouses.

Every hostile value a team's systems can hand over is in the corpus: timestamps beyond year 9999 or with
spaces around them, NUL, lone surrogates, Unicode spaces in e-mails, NaN and infinities, integers past
64 bits, 200 KiB fields, JSON nested past any parser, values of the wrong JSON type, records that are not
objects, broken lines and an unterminated CSV quote. For each load:

- it finishes (no crash, no error),
- conservation holds, and every record in the window is accounted for by its locator: loaded, superseded
  by a newer version of its key, or dead-lettered with a reason naming the column; every line that does
  not parse is a `malformed_record` dead letter located by file (or request) and line,
- the watermark is a token of the window,
- no raw PII (e-mail addresses, names) appears outside the raw table: not in the dead letters, held
  rows, load log, watermarks, file manifest or any log line.
"""

from __future__ import annotations

import csv
import json
import logging
import random
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import duckdb
import pyarrow as pa
import pytest

from assets.loading import Warehouse, load_partition
from assets.loading.watermark import Window
from assets.sources import FileDropSource, HttpSource, SqlSource
from assets.sources.base import has_surrogates, printable
from expectations.contract import parse_contract
from expectations.rules import coerce_column

N = 10_000
DAY = datetime(2026, 3, 1)
WINDOW = Window(DAY, DAY + timedelta(days=1))
PREVIOUS = Window(DAY - timedelta(days=1), DAY)
PII_MARK, NAME_MARK = "victim.example", "Zeldaprivate"

CONTRACT = parse_contract({
    "contract": "fuzz_leads", "version": "1.0.0", "severity": "standard",
    "boundary": {"flow": "fuzz", "source_system": "fuzz_system", "table": "fuzz_leads"},
    "idempotency_key": "lead_id", "change_token": "updated_at", "locator": "row_id",
    "owners": {"contract": "owner@meshline.example"},
    "columns": {
        "row_id": {"type": "integer", "required": True},
        "lead_id": {"type": "integer", "required": True},
        "email": {"type": "string", "required": True, "pattern": "email", "pii": True},
        "first_name": {"type": "string", "pii": True},
        "company": {"type": "string"},
        "campaign": {"type": "string", "allowed_values": ["webinar", "ads", "event"]},
        "score": {"type": "number", "min": 0, "max": 100},
        "active": {"type": "boolean"},
        "updated_at": {"type": "timestamp", "required": True},
    }}, "fuzz_leads.yml")
COLUMNS = CONTRACT.column_names

HOSTILE: dict[str, list] = {
    "email": ["a\u00a0b@{m}", "x{i}@{m}\n", "x{i}@{m}\u2003", "x{i}\x00@{m}", "x{i}\ud800@{m}", "not-an-email-{i}",
              "", None, ["x{i}@{m}"], {"e": "x{i}@{m}"}, 7, True],
    "first_name": [NAME_MARK + "\x00", NAME_MARK + "\ud83d", NAME_MARK * 20_000, "\u202e" + NAME_MARK, None, 3.5],
    "company": ["a,b", 'say "hi"', "line\nbreak", "x" * 210_000, "\x00", "\udfff", "\u0000\u0001\u001f", "NULL",
                "' OR 1=1 --", None, {"deep": [[[[1]]]]}],
    "campaign": ["webinar\n", "Webinar", "ads ", "\u00a0ads", "event", 1, None, "x" * 1000],
    "score": ["NaN", "nan", "inf", "-Infinity", "1e309", "-0", "100.0000001", "50", " 7 ", "1,5", "0x10",
              "\u0661", None, float("nan"), 1e308 * 10, 42, True, [1]],
    "active": ["yes", "TRUE", "0", "", None, 1, "maybe"],
    "updated_at": ["294000-01-01T00:00:00", "9999-12-31T23:59:59", " {t} ", "{t}Z", "{t}+14:00", "0000-01-01T00:00:00",
                   "2026-02-30T00:00:00", "NaN", "", None, 1767225600, "{t}\n", ["{t}"]],
    "lead_id": ["9223372036854775808", "-9223372036854775809", "1e3", "1.0", " 12 ", "NaN", "", None, "\u0661", [1]],
}


def _fill(v, i, t):
    if isinstance(v, str):
        return v.replace("{i}", str(i)).replace("{m}", PII_MARK).replace("{t}", t)
    if isinstance(v, list):
        return [_fill(x, i, t) for x in v]
    if isinstance(v, dict):
        return {k: _fill(x, i, t) for k, x in v.items()}
    return v


def corpus(seed: int = 20) -> list[dict]:
    """N records: two thirds clean, a third with one to three hostile values; keys collide often."""
    rng = random.Random(seed)
    out = []
    for i in range(1, N + 1):
        t = (DAY + timedelta(seconds=rng.randrange(86_400), microseconds=rng.randrange(10**6))).isoformat()
        rec = {"row_id": i, "lead_id": rng.randrange(1, N // 3), "email": f"p{i}@{PII_MARK}",
               "first_name": f"{NAME_MARK}{i}", "company": f"Company {i % 97}", "campaign": rng.choice(["webinar", "ads"]),
               "score": round(rng.uniform(0, 100), 2), "active": rng.choice([True, False]), "updated_at": t}
        if rng.random() < 0.35:
            for col in rng.sample(sorted(HOSTILE), rng.randint(1, 3)):
                rec[col] = _fill(rng.choice(HOSTILE[col]), i, t)
        if rng.random() < 0.01:
            del rec[rng.choice(["company", "score", "active"])]  # a sparse record
        out.append(rec)
    return out


def _tokens_in(texts: list, window: Window) -> list[bool]:
    """Which records a load of `window` reads: a token the loader reads inside it, or no readable token."""
    typed, _ = coerce_column(pa.array(texts, pa.string()), pa.timestamp("us"))
    return [t is None or window.start <= t < window.end for t in typed.to_pylist()]


def _as_text(v):
    from assets.sources.base import as_text

    return None if v is None else printable(as_text(v))


BROKEN_JSONL = ['{"row_id": 1, "lead_id": ', "[1, 2, 3]", '"just a string"', "{" * 100_000 + "}" * 100_000,
                '{"row_id": 900001, "lead_id": 5, "email": "' + "\\ud800" + f'x@{PII_MARK}", "updated_at": "2026-03-01T01:00:00"}}']


def write_jsonl(folder, records) -> int:
    """Two files of records and broken lines; returns the number of broken lines."""
    folder.mkdir()
    half = len(records) // 2
    for n, part in enumerate((records[:half], records[half:])):
        with open(folder / f"leads-{n}.jsonl", "w", encoding="utf-8", errors="surrogatepass") as f:
            for j, rec in enumerate(part):
                f.write(json.dumps(rec) + "\n")
                if n == 1 and j % 1000 == 0 and j // 1000 < len(BROKEN_JSONL):
                    f.write(BROKEN_JSONL[j // 1000] + "\n")
    return len(BROKEN_JSONL)


def write_csv(folder, records) -> int:
    """One CSV file; a row of the wrong width and an unterminated quote near the end. Returns the number
    of lines that cannot be read as records."""
    folder.mkdir()
    with open(folder / "leads.csv", "w", newline="", encoding="utf-8", errors="surrogatepass") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for rec in records:
            w.writerow(["" if rec.get(c) is None else _as_text(rec.get(c)) if not isinstance(rec.get(c), str)
                        else rec[c] for c in COLUMNS])
        f.write("1,2,3\n")  # the wrong width
        f.write(f'{N + 1},77,"unterminated@{PII_MARK},{NAME_MARK},c,ads,1,true,2026-03-01T10:00:00\n')
        w.writerow([N + 2, 78, f"after@{PII_MARK}", NAME_MARK, "c", "ads", 1, "true", "2026-03-01T11:00:00"])
    return 2


class Api:
    """The corpus behind a cursor-paginated JSON API; some pages hold records that are not objects."""

    def __init__(self, records):
        self.records = list(records)
        for k in range(0, 5):
            self.records.insert(1000 * k + 7, ["not", "an", "object"] if k % 2 else "a bare string")
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                start, limit = int(q.get("cursor", 0)), int(q.get("limit", 100))
                page = api.records[start:start + limit]
                nxt = str(start + limit) if start + limit < len(api.records) else None
                raw = json.dumps({"data": page, "next_cursor": nxt}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


def _text_rows(records):
    """Records as a text-only table holds them (what a database can store: no NUL, no lone surrogates)."""
    return [tuple(None if _as_text(r.get(c)) is None else _as_text(r.get(c)).replace("\x00", "") for c in COLUMNS)
            for r in records]


def duckdb_source(tmp_path, records):
    path = tmp_path / "source.duckdb"
    rows = _text_rows(records)
    table = pa.table({c: pa.array([r[i] for r in rows], pa.string()) for i, c in enumerate(COLUMNS)})
    with duckdb.connect(str(path)) as con:
        con.register("fuzz", table)
        con.execute("CREATE TABLE fuzz_leads AS SELECT * FROM fuzz")
    return SqlSource(f"duckdb:///{path}", "fuzz_leads", "fuzz_system")


def postgres_source(pg_url, records):
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    with engine.begin() as c:
        c.execute(text(f"CREATE TABLE fuzz_leads ({', '.join(c_ + ' TEXT' for c_ in COLUMNS)})"))
        c.exec_driver_sql(f"INSERT INTO fuzz_leads VALUES ({', '.join(['%s'] * len(COLUMNS))})", _text_rows(records))
    engine.dispose()
    return SqlSource(pg_url, "fuzz_leads", "fuzz_system")


KINDS = ["jsonl", "csv", "http", "duckdb", pytest.param("postgres_source", marks=pytest.mark.postgres)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_ten_thousand_hostile_records_load_conserved_located_and_without_pii(kind, warehouse_url, tmp_path, caplog,
                                                                             request):
    caplog.set_level(logging.DEBUG)
    records = corpus()
    broken = 0
    if kind == "jsonl":
        broken = write_jsonl(tmp_path / "landing", records)
        source = FileDropSource(tmp_path / "landing", system="fuzz_system", table="fuzz_leads", pattern="*.jsonl")
    elif kind == "csv":
        broken = write_csv(tmp_path / "landing", records)
        source = FileDropSource(tmp_path / "landing", system="fuzz_system", table="fuzz_leads", pattern="*.csv")
        records = records + [{"row_id": N + 2, "lead_id": 78, "updated_at": "2026-03-01T11:00:00"}]
    elif kind == "http":
        api = Api(records)
        request.addfinalizer(api.httpd.shutdown)
        broken = 5
        source = HttpSource(api.url, "/leads", system="fuzz_system", table="fuzz_leads", page_size=500,
                            rate_per_s=1000, burst=100)
    elif kind == "duckdb":
        source = duckdb_source(tmp_path, records)
    else:
        source = postgres_source(request.getfixturevalue("pg_url"), records)

    wh = Warehouse(warehouse_url)
    lines: list[str] = []
    # A record whose token reads as the day before (an offset of +14:00) is that day's: both days load.
    results = {w: load_partition(wh, source, CONTRACT, partition_key=w.start.date().isoformat(), window=w,
                                       run_id="fuzz-1", progress=lines.append) for w in (PREVIOUS, WINDOW)}

    # Records holding a lone surrogate cannot be parsed into text (JSON from a file or an API): malformed.
    unparsable = [has_surrogates(rec) if kind in ("jsonl", "http") else False for rec in records]
    token_texts = [_as_text(rec.get("updated_at")) for rec in records]
    malformed_total = 0
    for w, r in results.items():
        inside = _tokens_in(token_texts, w)
        expected = sum(i and not bad for i, bad in zip(inside, unparsable, strict=True))
        malformed = r.reason_counts["malformed_record"]
        malformed_total += malformed
        if kind == "http":  # the API answers every window with its broken records: each load dead-letters them
            assert malformed == broken + sum(i and bad for i, bad in zip(inside, unparsable, strict=True))
        assert r.conserved and r.rows_held == 0
        assert r.rows_read - malformed == expected, (w, r.rows_read, malformed, expected)
        assert r.watermark_to is None or w.start <= r.watermark_to < w.end
    if kind != "http":  # each broken line is dead-lettered by exactly one partition
        assert malformed_total == broken + sum(unparsable)
    r = results[WINDOW]
    assert r.rows_dead_lettered > 1000 and r.rows_loaded > 1000

    with wh.session() as s:
        loaded = {int(x) for (x,) in s.query("SELECT row_id FROM raw.fuzz_leads")}
        letters = s.query("SELECT source_locator, reason_code, reasons FROM meshline.dead_letters")
        dumped = {t: s.query(f"SELECT * FROM meshline.{t}") for t in
                  ("dead_letters", "held_rows", "load_log", "watermarks", "file_manifest", "file_index")
                  if wh.table_exists("meshline", t)}
        superseded_keys = {int(k) for (k,) in s.query("SELECT lead_id FROM raw.fuzz_leads")}
    lettered = {loc for loc, _, _ in letters}
    assert all(code == "malformed_record" or ":" in why for _, code, why in letters)  # reasons name columns
    # Every record read is loaded, dead-lettered by its locator, or superseded by a newer version of its key.
    read = [rec for rec, a, b, bad in zip(records, _tokens_in(token_texts, PREVIOUS), _tokens_in(token_texts, WINDOW),
                                          unparsable, strict=True) if (a or b) and not bad]
    unaccounted = [rec["row_id"] for rec in read
                   if rec["row_id"] not in loaded and str(rec["row_id"]) not in lettered
                   and not (isinstance(rec.get("lead_id"), int) and rec["lead_id"] in superseded_keys)]
    assert not unaccounted, unaccounted[:10]

    text = repr(dumped) + "\n".join(lines) + caplog.text
    assert PII_MARK not in text and NAME_MARK not in text

    again = load_partition(wh, source, CONTRACT, partition_key="2026-03-01", window=WINDOW, run_id="fuzz-2")
    assert again.conserved and again.rows_loaded == 0  # a re-run changes nothing


@pytest.mark.slow
def test_no_raw_pii_from_the_hostile_corpus_in_any_sink(warehouse_url, tmp_path, home, monkeypatch, caplog, capsys):
    """The corpus through Dagster (load, contract check with GX and Data Docs), then paging, the CLI's
    dead-letter listing and show, a manual resolution (audit log) and the HTML report: no e-mail address or
    name of the corpus appears in any of them."""
    import dataclasses

    import dagster as dg

    from assets.flows.boundary import boundary_asset, contract_check
    from assets.hygiene.report import write_report
    from assets.remediation.notify import Notifier
    from assets.remediation.paging import page_dead_letters
    from assets.resources import DataDocsResource, SourcesResource, WarehouseResource
    from assets.settings import Settings
    from orchestration.cli import main
    from tests.conftest import TEST_REDACTION_KEY

    caplog.set_level(logging.DEBUG)
    write_jsonl(tmp_path / "landing", corpus())
    parts = dg.DailyPartitionsDefinition(start_date="2026-02-01")
    res = dg.materialize(
        [boundary_asset(CONTRACT, parts, pool=None, lookback=timedelta(hours=6)), contract_check(CONTRACT, parts, pool=None)],
        partition_key="2026-03-01", instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        resources={"warehouse": WarehouseResource(url=warehouse_url, redaction_key=TEST_REDACTION_KEY),
                   "sources": SourcesResource(boundaries={"fuzz_leads": {"kind": "files", "folder": str(tmp_path / "landing")}}),
                   "data_docs": DataDocsResource(root=str(tmp_path / "docs"))})
    assert res.get_asset_materialization_events() and res.get_asset_check_evaluations()
    wh = Warehouse(warehouse_url, redaction_key=TEST_REDACTION_KEY.encode())
    tight = dataclasses.replace(CONTRACT, slos={"dead_letter_count_max": 1})
    assert page_dead_letters(wh, [tight], Notifier(kind="log"))[0]["status"] == "sent"

    monkeypatch.setenv("MESHLINE_WAREHOUSE_URL", warehouse_url)
    capsys.readouterr()
    assert main(["dlq", "list", "--json", "--limit", "500"]) == 0
    listed = capsys.readouterr().out
    first = json.loads(listed.splitlines()[0])["dead_letter_id"]
    assert main(["dlq", "show", first]) == 0
    assert main(["dlq", "resolve", first, "--note", "checked by hand"]) == 0
    cli = listed + capsys.readouterr().out
    report = write_report(Settings.from_env(), tmp_path / "report.html").read_text()

    with wh.session() as s:
        tables = [t for (t,) in s.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'meshline'")]
        stored = {t: s.query(f"SELECT * FROM meshline.{t}") for t in tables}
        raw = s.query("SELECT email, first_name FROM raw.fuzz_leads")
    assert PII_MARK in repr(raw) and NAME_MARK in repr(raw)  # the marks do flow; only the raw table may hold them
    docs = "".join(p.read_text(errors="replace") for p in (tmp_path / "docs").rglob("*") if p.is_file())
    assert {"alerts", "audit_log", "dead_letters", "check_results"} <= set(stored) and docs and len(cli) > 1000
    for where, text in (("warehouse", repr(stored)), ("Data Docs", docs), ("CLI", cli), ("report", report),
                        ("logs", caplog.text)):
        assert PII_MARK not in text and NAME_MARK not in text, where
