"""Project rule: no module in widgets/ is over ~400 lines (checked at 420)."""
from pathlib import Path

import pytest

LIMIT = 420
WIDGETS = Path(__file__).resolve().parents[1] / "widgets"


@pytest.mark.parametrize("path", sorted(WIDGETS.glob("*.py")), ids=lambda p: p.name)
def test_widgets_module_is_at_most_about_400_lines(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= LIMIT, f"{path.name} has {n} lines: split it (at most ~400 lines a module in widgets/)"
