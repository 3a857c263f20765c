"""The proxy benchmark's confidence interval for a median ratio (bench/proxy_bench.py)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def proxy_bench():
    sys.path.insert(0, str(BENCH))  # the script imports its neighbour ``common``
    try:
        spec = importlib.util.spec_from_file_location("proxy_bench_under_test", BENCH / "proxy_bench.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("proxy_bench_under_test", None)
        sys.path.remove(str(BENCH))


def binomial_below(n: int, k: int) -> float:
    """P(Binomial(n, 1/2) < k)."""
    return sum(math.comb(n, i) for i in range(k)) / 2**n


@pytest.mark.parametrize(("n", "k"), [(8, 1), (16, 4), (24, 7), (32, 10)])
def test_order_statistics_match_the_binomial_tables(proxy_bench, n, k):
    values = [float(i) for i in range(1, n + 1)]  # x(i) == i
    low, high = proxy_bench.median_interval(values)
    assert (low, high) == (k, n + 1 - k)
    # k is the largest order statistic whose two tails stay within 2.5% each.
    assert binomial_below(n, k) <= 0.025 < binomial_below(n, k + 1)


def test_order_does_not_matter_and_the_median_is_inside(proxy_bench):
    values = [0.93, 0.81, 1.07, 0.88, 0.95, 0.90, 0.99, 0.86, 0.92, 0.91, 0.87, 0.97, 0.89, 0.94, 0.96, 0.85]
    spread = proxy_bench.Spread.of(values)
    assert (spread.ci_low, spread.ci_high) == proxy_bench.median_interval(sorted(values))
    assert (spread.ci_low, spread.ci_high) == (0.87, 0.96)  # x(4) and x(13) of the 16
    assert spread.ci_low <= spread.median <= spread.ci_high


def test_too_few_values_give_the_whole_range(proxy_bench):
    assert proxy_bench.median_interval([0.9, 1.1, 0.7]) == (0.7, 1.1)
    assert proxy_bench.median_interval([1.0]) == (1.0, 1.0)


def test_the_verdict_says_when_the_rounds_cannot_tell(proxy_bench):
    spanning = proxy_bench.Spread.of([0.85, 0.88, 0.91, 0.93, 0.95, 0.86, 0.92, 0.90])
    assert not spanning.settles(0.9)
    assert "not settled" in proxy_bench.target_verdict(spanning)
    clear = proxy_bench.Spread.of([0.95 + i / 100 for i in range(16)])
    assert clear.settles(0.9)
    text = proxy_bench.target_verdict(clear)
    assert "meets" in text and "not settled" not in text and "over 16 rounds" in text
    below = proxy_bench.Spread.of([0.80 + i / 200 for i in range(16)])
    assert below.settles(0.9) and "BELOW" in proxy_bench.target_verdict(below)


def test_a_median_just_under_the_target_is_not_shown_as_on_it(proxy_bench):
    just_under = proxy_bench.target_verdict(proxy_bench.Spread.of([0.8996] * 8))
    assert just_under.startswith("0.89 — BELOW")
    on_it = proxy_bench.target_verdict(proxy_bench.Spread.of([0.9] * 8))
    assert on_it.startswith("0.90 — meets")
