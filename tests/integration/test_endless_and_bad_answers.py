"""A source answer no well-behaved API gives ends a load, with an error naming the boundary and the
request, within a bounded time; a record-level problem is a dead letter and the rest of the partition
loads. Each case is a real HTTP server on 127.0.0.1 or a real folder."""

from __future__ import annotations

import gzip
import json
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from assets.loading import Warehouse, load_partition
from assets.loading.watermark import Window
from assets.sources import FileDropSource, HttpSource, SqlSource
from assets.sources.http import parse_retry_after
from expectations.contract import parse_contract
from expectations.reasons import LoadError, SourceError, SourceUnreachable

DAY = datetime(2026, 3, 1)
WINDOW = Window(DAY, DAY + timedelta(days=1))
CONTRACT = parse_contract({
    "contract": "api_invoices", "version": "1.0.0", "severity": "standard",
    "boundary": {"flow": "f", "source_system": "billing", "table": "invoices"},
    "idempotency_key": "invoice_id", "change_token": "updated_at", "owners": {"contract": "o@meshline.example"},
    "columns": {"invoice_id": {"type": "integer", "required": True},
                "amount": {"type": "number"},
                "updated_at": {"type": "timestamp", "required": True}}}, "api_invoices.yml")


def _rec(i: int, **extra) -> dict:
    return {"invoice_id": i, "amount": i, "updated_at": (DAY + timedelta(minutes=i)).isoformat(), **extra}


class Server:
    """Answers each GET with `answer(query, n)` -> (status, headers, body bytes, trickle seconds per byte)."""

    def __init__(self, answer):
        self.requests = 0
        srv = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                srv.requests += 1
                q = {k: v[0] for k, v in parse_qs(urlparse(self.path).query).items()}
                status, headers, body, trickle = answer(q, srv.requests)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    if trickle:
                        for b in body:
                            self.wfile.write(bytes([b]))
                            self.wfile.flush()
                            time.sleep(trickle)
                    else:
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def serve(request):
    def start(answer):
        s = Server(answer)
        request.addfinalizer(s.httpd.shutdown)
        return s
    return start


def _json(body) -> tuple[int, dict, bytes, float]:
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode(), 0


def _source(url, **kw) -> HttpSource:
    opts = dict(system="billing", table="invoices", page_size=10, rate_per_s=1000, burst=100, timeout_s=1,
                backoff_base_s=0.01, backoff_cap_s=0.02, max_retries=2)
    return HttpSource(url, "/invoices", **{**opts, **kw})


def _load(wh, source, **kw):
    return load_partition(wh, source, CONTRACT, partition_key="2026-03-01", window=WINDOW, run_id="r", **kw)


def test_a_cursor_that_repeats_ends_the_load_naming_the_cursor(serve, tmp_path):
    s = serve(lambda q, n: _json({"data": [_rec(n)], "next_cursor": "c1" if n % 2 else "c2"}))
    with pytest.raises(SourceError, match=r"cursor 'c\d' a second time; its pagination loops"):
        _load(Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}"), _source(s.url))
    assert s.requests < 10


def test_pages_that_never_end_stop_at_max_pages_or_when_a_page_repeats(serve, tmp_path):
    wh = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    same = serve(lambda q, n: _json({"data": [_rec(1)]}))
    with pytest.raises(SourceError, match="the same records as the page before"):
        _load(wh, _source(same.url, pagination="page"))
    endless = serve(lambda q, n: _json({"data": [_rec(int(q.get("page", 1)) % 1000)]}))
    with pytest.raises(SourceError, match="more than 50 pages"):
        _load(wh, _source(endless.url, pagination="page", max_pages=50))
    with wh.session() as s:
        assert not wh.table_exists("raw", "api_invoices") or s.scalar("SELECT count(*) FROM raw.api_invoices") == 0


def test_a_body_that_trickles_is_cut_off_at_the_request_deadline(serve, tmp_path):
    body = json.dumps({"data": [_rec(1)], "next_cursor": None}).encode()
    s = serve(lambda q, n: (200, {"Content-Type": "application/json"}, body, 0.05))  # every read is quick; the whole body is not
    t0 = time.monotonic()
    with pytest.raises(SourceUnreachable, match="gave up"):
        _load(Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}"), _source(s.url, request_deadline_s=1, max_retries=1))
    assert time.monotonic() - t0 < 6  # bounded by the request deadline, not by the body's pace


def test_a_load_past_its_deadline_stops_and_writes_nothing(serve, tmp_path):
    s = serve(lambda q, n: _json({"data": [_rec(n)], "next_cursor": str(n)}) if n < 10_000 else _json({"data": []}))
    wh = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    t0 = time.monotonic()
    with pytest.raises((LoadError, SourceUnreachable), match="deadline"):
        _load(wh, _source(s.url, rate_per_s=50, burst=1), deadline_s=1.0, chunk_rows=5)
    assert time.monotonic() - t0 < 5
    assert not wh.table_exists("meshline", "watermarks")  # the first load's tables were rolled back too


@pytest.mark.parametrize("header", ["1000000000", "9" * 400, "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_retry_after_beyond_max_retry_after_is_given_up_at_once(serve, tmp_path, header):
    s = serve(lambda q, n: (429, {"Retry-After": header}, b"{}", 0))
    t0 = time.monotonic()
    with pytest.raises(SourceUnreachable, match="max_retry_after_s"):
        _load(Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}"), _source(s.url, max_retry_after_s=60))
    assert time.monotonic() - t0 < 3 and s.requests == 1


@pytest.mark.parametrize("header,expected", [("\u00b2", None), ("9" * 400, 1e11), ("Fri, 31 Dec 9999 23:59:59 GMT", 2.5e11),
                                             ("-5", None), ("1.5", None), ("Sun, 99 Foo 2026", None)])
def test_retry_after_never_raises(header, expected):
    got = parse_retry_after(header)
    assert (got is None) == (expected is None)
    if expected is not None:
        assert got >= expected * 0.9


def test_a_gzip_bomb_is_refused_at_the_size_limit_without_reading_it_whole(serve, tmp_path):
    bomb = gzip.compress(b'{"data": [' + b" " * (300 << 20) + b"]}", compresslevel=9)  # far past the limit once unpacked
    s = serve(lambda q, n: (200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, bomb, 0))
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SourceError, match="larger than 8 MiB"):
        _load(Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}"), _source(s.url, max_response_mb=8))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 150 << 10  # KiB: the unpacked body is never held


def test_a_broken_gzip_body_is_retried_then_given_up_naming_the_boundary(serve, tmp_path):
    s = serve(lambda q, n: (200, {"Content-Type": "application/json", "Content-Encoding": "gzip"}, b"\x1f\x8bnot gzip", 0))
    with pytest.raises(SourceUnreachable, match="billing.invoices: gave up .* DecodingError"):
        _load(Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}"), _source(s.url))


@pytest.mark.parametrize("body", [[_rec(1)], "text", 5, {"data": {"a": 1}}])
def test_an_answer_that_is_not_an_object_with_a_list_names_the_request(serve, tmp_path, body):
    s = serve(lambda q, n: _json(body))
    with pytest.raises(SourceError, match=r"billing.invoices: the answer to /invoices"):
        _load(Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}"), _source(s.url))


def test_records_that_are_not_objects_are_dead_letters_and_the_rest_loads(serve, warehouse_url):
    s = serve(lambda q, n: _json({"data": [_rec(1), ["x"], "y", None, _rec(2)], "next_cursor": None}))
    r = _load(Warehouse(warehouse_url), _source(s.url))
    assert (r.rows_read, r.rows_loaded, r.rows_dead_lettered) == (5, 2, 3)
    with Warehouse(warehouse_url).session() as sess:
        locs = sorted(x for (x,) in sess.query("SELECT source_locator FROM meshline.dead_letters"))
    assert locs == ["/invoices:2", "/invoices:3", "/invoices:4"]


def test_a_token_with_spaces_reads_as_the_window_reads_it_and_never_moves_the_watermark_past_it(tmp_path):
    """The issue's case: `" 9999-12-31T00:00:00 "` was accepted by the rules but not by the window filter,
    moved the watermark to 9999 and hid every later row."""
    folder = tmp_path / "drop"
    folder.mkdir()
    rows = [_rec(1), {**_rec(2), "updated_at": " 9999-12-31T00:00:00 "}, {**_rec(3), "updated_at": f" {DAY.isoformat()} "}]
    (folder / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    wh = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    r = _load(wh, FileDropSource(folder, system="billing", table="invoices"))
    assert (r.rows_read, r.rows_loaded) == (2, 2)  # the 9999 row belongs to 9999-12-31's partition
    assert r.watermark_to == DAY + timedelta(minutes=1)


def test_schema_drift_past_the_first_record_holds_the_rows(tmp_path, warehouse_url):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.jsonl").write_text("\n".join(json.dumps(r) for r in [_rec(1), _rec(2), _rec(3, region="emea")]) + "\n")
    (folder / "b.csv").write_text("invoice_id,amount,updated_at,channel\n4,4,2026-03-01T00:04:00,web\n")
    wh = Warehouse(warehouse_url)
    r = _load(wh, FileDropSource(folder, system="billing", table="invoices"))
    assert (r.rows_read, r.rows_held, r.rows_loaded) == (4, 4, 0)
    assert set(r.unknown_columns) == {"region", "channel"}
    with wh.session() as s:
        assert s.scalar("SELECT count(*) FROM meshline.watermarks") == 0


def test_drift_past_the_first_record_of_an_api_holds_the_rows(serve, tmp_path):
    s = serve(lambda q, n: _json({"data": [_rec(1), _rec(2, plan="pro")], "next_cursor": None}))
    r = _load(Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}"), _source(s.url))
    assert (r.rows_read, r.rows_held) == (2, 2) and r.unknown_columns == ("plan",)


def test_a_file_renamed_between_listing_and_reading_is_read_next_time(tmp_path, monkeypatch):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps(_rec(1)) + "\n")
    (folder / "b.jsonl").write_text(json.dumps(_rec(2)) + "\n")
    src = FileDropSource(folder, system="billing", table="invoices")
    listed = src.files()
    monkeypatch.setattr(src, "files", lambda: listed)
    (folder / "b.jsonl").rename(folder / "c.jsonl")
    wh = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    r = _load(wh, src)
    assert (r.rows_read, r.rows_loaded) == (1, 1)
    monkeypatch.undo()
    r2 = _load(wh, FileDropSource(folder, system="billing", table="invoices"))
    assert r2.rows_loaded == 1  # c.jsonl, the renamed file


def test_an_unterminated_csv_quote_costs_one_line_not_the_rest_of_the_file(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    lines = ["invoice_id,amount,updated_at", '1,"oops,2026-03-01T00:01:00']
    lines += [f"{i},{i},{(DAY + timedelta(minutes=i)).isoformat()}" for i in range(2, 202)]
    (folder / "a.csv").write_text("\n".join(lines) + "\n")
    r = _load(Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}"), FileDropSource(folder, system="billing", table="invoices"))
    assert (r.rows_read, r.rows_loaded, r.rows_dead_lettered) == (201, 200, 1)
    assert r.reason_counts["malformed_record"] == 1


def test_a_csv_field_over_128_kib_loads(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    (folder / "a.csv").write_text("invoice_id,amount,updated_at,note\n"
                                  f"1,1,2026-03-01T00:01:00,{'x' * 300_000}\n2,2,2026-03-01T00:02:00,short\n")
    contract = parse_contract({**json.loads(json.dumps(_raw_contract())),
                               "columns": {**_raw_contract()["columns"], "note": {"type": "string"}}}, "c.yml")
    r = load_partition(Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}"), FileDropSource(folder, system="billing", table="invoices"),
                       contract, partition_key="2026-03-01", window=WINDOW, run_id="r")
    assert (r.rows_read, r.rows_loaded) == (2, 2)


def _raw_contract() -> dict:
    return {"contract": "api_invoices", "version": "1.0.0", "severity": "standard",
            "boundary": {"flow": "f", "source_system": "billing", "table": "invoices"},
            "idempotency_key": "invoice_id", "change_token": "updated_at", "owners": {"contract": "o@meshline.example"},
            "columns": {"invoice_id": {"type": "integer", "required": True}, "amount": {"type": "number"},
                        "updated_at": {"type": "timestamp", "required": True}}}


@pytest.mark.postgres
def test_a_postgres_source_is_read_in_a_read_only_transaction(pg_url, tmp_path):
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE invoices (invoice_id int, amount float, updated_at timestamp)"))
        c.execute(text("INSERT INTO invoices VALUES (1, 1, '2026-03-01 00:01:00')"))
        c.execute(text("CREATE SEQUENCE side_effect"))
    with pytest.raises(ValueError, match="one SELECT statement"):
        SqlSource(pg_url, "invoices", "billing", query="SELECT 1 AS x; DROP TABLE invoices")
    writes = SqlSource(pg_url, "invoices", "billing",
                       query="SELECT invoice_id, amount, updated_at, nextval('side_effect') AS n FROM invoices")
    with pytest.raises(SourceError, match="read-only transaction"):
        _load(Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}"), writes)
    with engine.begin() as c:
        assert c.execute(text("SELECT last_value, is_called FROM side_effect")).one() == (1, False)
    engine.dispose()


def test_a_file_name_that_is_not_utf8_loads_and_is_located(tmp_path, warehouse_url):
    """A landing folder may hold a name no UTF-8 column can store (Latin-1 bytes from an old exporter)."""
    import os

    folder = tmp_path / "drop"
    folder.mkdir()
    name = os.fsdecode(b"ventes-\xe9t\xe9.jsonl")
    (folder / name).write_text(json.dumps(_rec(1)) + "\n" + "{broken\n")
    contract = parse_contract({**_raw_contract(), "locator": "source_position",
                               "columns": {**_raw_contract()["columns"], "source_position": {"type": "string"}}}, "c.yml")
    wh = Warehouse(warehouse_url)
    r = load_partition(wh, FileDropSource(folder, system="billing", table="invoices"), contract,
                       partition_key="2026-03-01", window=WINDOW, run_id="r")
    assert (r.rows_read, r.rows_loaded, r.rows_dead_lettered) == (2, 1, 1)
    with wh.session() as s:
        assert s.scalar("SELECT source_position FROM raw.api_invoices") == "ventes-\ufffdt\ufffd.jsonl:1"
        assert s.scalar("SELECT source_locator FROM meshline.dead_letters") == "ventes-\ufffdt\ufffd.jsonl:2"


@pytest.mark.postgres
def test_a_postgres_value_longer_than_a_copy_block_is_named_and_max_value_mb_reads_it(pg_url, tmp_path):
    from sqlalchemy import create_engine, text

    engine = create_engine(pg_url)
    with engine.begin() as c:
        c.execute(text("CREATE TABLE invoices (invoice_id int, amount float, updated_at timestamp, note text)"))
        c.execute(text("INSERT INTO invoices VALUES (1, 1, '2026-03-01 00:01:00', repeat('x', 30000000)),"
                       " (2, 2, '2026-03-01 00:02:00', 'a line\nbreak, \"quoted\"')"))
    engine.dispose()
    contract = parse_contract({**_raw_contract(), "columns": {**_raw_contract()["columns"], "note": {"type": "string"}}},
                              "c.yml")
    wh = Warehouse(f"duckdb:///{tmp_path / 'w.duckdb'}")
    with pytest.raises(SourceError, match="too long for a 2 MiB block; raise max_value_mb"):
        load_partition(wh, SqlSource(pg_url, "invoices", "billing"), contract, partition_key="2026-03-01",
                       window=WINDOW, run_id="r")
    r = load_partition(wh, SqlSource(pg_url, "invoices", "billing", max_value_mb=64), contract,
                       partition_key="2026-03-01", window=WINDOW, run_id="r")
    assert (r.rows_read, r.rows_loaded) == (2, 2)
    with wh.session() as s:
        assert s.scalar("SELECT note FROM raw.api_invoices WHERE invoice_id = 2") == 'a line\nbreak, "quoted"'


def test_a_typed_source_value_python_cannot_hold_is_a_dead_letter_showing_it(tmp_path, warehouse_url):
    """A DuckDB source whose TIMESTAMP column holds year 294000 and whose DOUBLE holds NaN: the row is a
    dead letter with a type_mismatch on each column (the dead-letter path raised OverflowError)."""
    import dataclasses

    import duckdb

    from expectations.contract import Column

    with duckdb.connect(str(tmp_path / "src.duckdb")) as con:
        con.execute("CREATE TABLE invoices (invoice_id BIGINT, amount DOUBLE, updated_at TIMESTAMP, paid_at TIMESTAMP)")
        con.execute("INSERT INTO invoices VALUES (1, 'NaN'::DOUBLE, '2026-03-01 01:00', '294000-01-01'::TIMESTAMP),"
                    " (2, 2, '2026-03-01 02:00', NULL)")
    contract = dataclasses.replace(CONTRACT, columns=(*CONTRACT.columns, Column("paid_at", "timestamp")))
    wh = Warehouse(warehouse_url)
    r = load_partition(wh, SqlSource(f"duckdb:///{tmp_path / 'src.duckdb'}", "invoices", "billing"), contract,
                       partition_key="2026-03-01", window=WINDOW, run_id="r")
    assert (r.rows_read, r.rows_loaded, r.rows_dead_lettered) == (2, 1, 1)
    with wh.session() as s:
        reasons, payload = s.query("SELECT reasons, payload FROM meshline.dead_letters")[0]
    assert sorted(reasons.split(";")) == ["type_mismatch:amount", "type_mismatch:paid_at"]
    assert "value out of range: 9215576668800000000" in payload  # Arrow's text: microseconds since 1970
