"""Engineering units for tiny models' times and rates (issue 13)."""

from conveyor.units import eng, plural, rate, seconds, span


def test_tiny_times_and_big_rates_read_in_engineering_units():
    assert seconds(4e-7) == "400 ns"
    assert seconds(5.33e-5) == "53.3 µs"
    assert seconds(0.0123) == "12.3 ms"
    assert seconds(2.0) == "2.00 s"
    assert rate(2343750.0) == "2.34 M"
    assert rate(947.6) == "948"
    assert eng(0.0, "s") == "0 s"


def test_plural_and_span():
    assert plural(1, "layer") == "1 layer" and plural(3, "layer") == "3 layers"
    assert span(("conv3",)) == "conv3" and span(("a", "b", "c")) == "a..c (3)"
