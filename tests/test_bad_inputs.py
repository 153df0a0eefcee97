"""Every case of the bad-input table (benchmarks/bad_inputs.py) is refused clearly: the
exception type and message it pins, in the ``api(args): what. Got X. How to fix.`` layout,
before any update ran."""
import re
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from bad_inputs import CASES, LAYOUT, UPDATES  # noqa: E402


def test_the_table_is_large_and_its_cases_distinct():
    assert len(CASES) >= 60
    assert len({(c.area, c.what) for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.area}: {c.what}" for c in CASES])
def test_bad_input_is_refused_clearly_before_any_update(case, tmp_path):
    UPDATES[0] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(case.exc) as info:
            case.run(tmp_path)
    msg = str(info.value)
    assert LAYOUT.match(msg), msg
    assert re.search(case.match, msg), msg
    assert UPDATES[0] == 0, f"{UPDATES[0]} updates ran before: {msg}"
