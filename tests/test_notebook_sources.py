"""Every committed notebook is what its generator in notebooks/src builds (cell by cell: type and source), so an
edit made to a .ipynb alone cannot be lost the next time the notebook is regenerated, and the notebooks carry no
outputs. Runs each generator with its writer replaced: nothing is written."""
import runpy
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "notebooks" / "src"
GENERATORS = sorted(p for p in SRC.glob("[0-9][0-9]_*.py"))


def built(path: Path):
    sys.path.insert(0, str(SRC))
    try:
        import _nbgen
        got = {}
        real = _nbgen.main
        _nbgen.main = lambda nb, name, argv=None: got.update(nb=nb, name=name)
        try:
            runpy.run_path(str(path), run_name="__main__")
        finally:
            _nbgen.main = real
    finally:
        sys.path.remove(str(SRC))
    return got["nb"], got["name"]


def test_every_notebook_has_a_generator():
    names = {p.stem for p in GENERATORS}
    assert {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")} == names


@pytest.mark.parametrize("path", GENERATORS, ids=lambda p: p.stem)
def test_committed_notebook_is_what_its_generator_builds(path):
    nb, name = built(path)
    assert name == path.stem + ".ipynb"
    committed = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    want = [(c.cell_type, c.source) for c in nb.cells]
    have = [(c.cell_type, c.source) for c in committed.cells]
    assert len(have) == len(want), f"{name}: {len(have)} cells committed, the generator builds {len(want)}"
    for i, (h, w) in enumerate(zip(have, want)):
        assert h == w, f"{name} cell {i} differs from notebooks/src/{path.name} (regenerate: python {path})"
    assert not any(c.get("outputs") for c in committed.cells if c.cell_type == "code"), "committed with outputs"
