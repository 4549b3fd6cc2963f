from assets.flows.analytics import volume_verdict


def test_too_little_history_passes_and_says_so():
    ok, dev, why = volume_verdict(10, [100, 100], 0.5)
    assert ok and dev is None and "too few" in why


def test_within_and_beyond_tolerance():
    assert volume_verdict(140, [100, 100, 100], 0.5)[0]
    ok, dev, why = volume_verdict(40, [100, 100, 100], 0.5)
    assert not ok and round(dev, 2) == -0.6 and "-60%" in why
    assert not volume_verdict(151, [100, 100, 100], 0.5)[0]


def test_zero_average():
    assert volume_verdict(0, [0, 0, 0], 0.5)[0]
    assert not volume_verdict(5, [0, 0, 0], 0.5)[0]
