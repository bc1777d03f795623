"""Project rule: no module in widgets/ is over ~400 lines (checked at 420)."""
from pathlib import Path

import pytest

LIMIT = 420
WIDGETS = Path(__file__).resolve().parents[1] / "widgets"
# known over the limit, to be split next (issue 14); strict: the mark must go once the module is split
BEING_SPLIT = {"dashboard.py": "490 lines: the URL/experiment binding is still to move into its own module",
               "pool.py": "460 lines: the child's main loop is still to move into its own module"}


def _params():
    for p in sorted(WIDGETS.glob("*.py")):
        marks = [pytest.mark.xfail(strict=True, reason=BEING_SPLIT[p.name])] if p.name in BEING_SPLIT else []
        yield pytest.param(p, id=p.name, marks=marks)


@pytest.mark.parametrize("path", list(_params()))
def test_widgets_module_is_at_most_about_400_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= LIMIT, f"{path.name} has {n} lines: split it (at most ~400 lines a module in widgets/)"
