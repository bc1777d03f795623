"""Notebooks: the quickstart runs top to bottom (quick mode); every notebook is committed clean and is executed
by some test."""
import re
from pathlib import Path

import nbformat
import pytest

from nbutil import ROOT, run_notebook

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.slow
def test_quickstart_executes():
    nb = run_notebook("notebooks/00_quickstart.ipynb")
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "test accuracy after" in outputs and "saved and reloaded" in outputs
    assert "lr=0.21: diverged" in outputs and "lr=0.19: finished" in outputs
    # the distance from initialisation grows sublinearly and flattens on the log-step axis, as the prose says
    m = re.search(r"gained per step: ([\d.]+) over steps 0-\d+, ([\d.]+) over", outputs)
    assert m and float(m.group(2)) < float(m.group(1)) / 2
    gains = [float(g) for g in re.findall(r"\d+->\d+: ([\d.]+)", outputs)]
    assert len(gains) >= 2 and gains[-1] < gains[0]
    # the inline dashboard must render without internet: Panel's and Bokeh's JavaScript travel in the notebook,
    # not as <script src="https://cdn..."> tags
    rich = "".join(str(o.get("data", {})) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "application/vnd.holoviews_load.v0+json" in rich or "Bokeh" in rich
    cdn = re.findall(r'<script[^>]*src=\\?["\']https?://[^"\'\\]*', rich) + \
        re.findall(r'https?://cdn\.(?:bokeh\.org|holoviz\.org)/[^"\'\\ ]*\.js', rich)     # Panel's load script
    assert not cdn, f"the notebook loads JavaScript from a CDN: {cdn[:3]}"
    assert len(rich) > 1_000_000, "Panel/Bokeh's JavaScript is not inlined"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_clean_numbered_and_honours_quick_mode(path):
    nb = nbformat.read(path, as_version=4)
    assert re.match(r"\d\d_", path.name), "notebooks are numbered tours"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.get("outputs"), f"{path.name} is committed with outputs"
    assert "WORKBENCH_QUICK" in "".join(c.source for c in nb.cells), f"{path.name} has no quick mode"


def test_every_notebook_is_executed_by_a_test():
    sources = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    for path in NOTEBOOKS:
        assert path.name in sources or path.stem in sources, f"no test executes {path.name}"


def test_notebooks_are_numbered_without_gaps_and_have_one_kind_of_source():
    numbers = sorted(int(p.name[:2]) for p in NOTEBOOKS)
    assert numbers == list(range(len(numbers))), f"notebook numbers have gaps or repeats: {numbers}"
    src = ROOT / "notebooks" / "src"
    for path in NOTEBOOKS:
        assert (src / f"{path.stem}.py").is_file(), f"{path.name} has no source notebooks/src/{path.stem}.py"
    stray = [p.name for p in src.glob("*.py") if not p.name.startswith("_")
             and not (ROOT / "notebooks" / f"{p.stem}.ipynb").is_file()]
    assert not stray, f"sources without a notebook: {stray}"
