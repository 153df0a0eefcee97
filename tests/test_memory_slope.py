"""Resident memory stays flat over 5000 steps of a bilevel solve (slow: ~50 s)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="reads /proc")
def test_rss_slope_over_5000_steps_is_under_1_mb_per_1000():
    from memory_slope import run
    out = run(5000)
    assert out["samples"][-1][0] == 5000
    assert out["mb_per_1000_steps"] < 1.0, out
