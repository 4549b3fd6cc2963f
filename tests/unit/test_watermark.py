from datetime import datetime, timedelta

import pytest

from assets.loading.watermark import Window, advance, daily_window, extract_bounds

W = daily_window("2026-03-10")


def test_daily_window_is_half_open_day():
    assert W.start == datetime(2026, 3, 10) and W.end == datetime(2026, 3, 11)


def test_bad_partition_key_is_a_clear_error():
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        daily_window("2026-13-01")


def test_first_load_reads_whole_window_inclusive():
    b = extract_bounds(W, None, timedelta(hours=6))
    assert (b.low, b.inclusive, b.high) == (W.start, True, W.end)


def test_incremental_reads_after_watermark_minus_lookback_exclusive():
    wm = datetime(2026, 3, 10, 20, 0)
    b = extract_bounds(W, wm, timedelta(hours=6))
    assert (b.low, b.inclusive, b.high) == (datetime(2026, 3, 10, 14, 0), False, W.end)


def test_lookback_reaching_before_window_is_clamped_to_window_start():
    b = extract_bounds(W, datetime(2026, 3, 10, 2, 0), timedelta(hours=6))
    assert (b.low, b.inclusive) == (W.start, True)


def test_full_refresh_ignores_watermark():
    b = extract_bounds(W, datetime(2026, 3, 10, 23, 0), timedelta(0), full_refresh=True)
    assert (b.low, b.inclusive) == (W.start, True)


def test_watermark_past_window_reads_nothing_new():
    b = extract_bounds(W, datetime(2026, 3, 12), timedelta(hours=1))
    assert b.low == W.end and not b.inclusive


def test_negative_lookback_and_empty_window_are_refused():
    with pytest.raises(ValueError):
        extract_bounds(W, None, timedelta(hours=-1))
    with pytest.raises(ValueError, match="empty window"):
        Window(W.end, W.start)


def test_watermark_never_moves_backwards():
    a, b = datetime(2026, 3, 10, 5), datetime(2026, 3, 10, 9)
    assert advance(None, a) == a
    assert advance(b, a) == b
    assert advance(a, b) == b
    assert advance(a, None) == a
