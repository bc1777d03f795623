"""Shared by the notebook generators in this folder: assemble cells into a notebook, write it without outputs
next to this folder, and with ``--execute`` run it once in quick mode (WORKBENCH_QUICK=1, unless set) in a real
Jupyter kernel, printing what its cells printed. The committed notebooks never carry outputs."""
from __future__ import annotations

import copy
import os
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1]
METADATA = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}}


class Cells(list):
    """A list of cells with ``md(source)`` and ``code(source)`` appenders (sources are stripped)."""

    def md(self, source: str):
        self.append(new_markdown_cell(source.strip()))

    def code(self, source: str):
        self.append(new_code_cell(source.strip()))


def notebook(cells) -> nbformat.NotebookNode:
    """A notebook from nbformat cells or ``("md" | "code", source)`` pairs."""
    built = [(new_markdown_cell(c[1]) if c[0] == "md" else new_code_cell(c[1])) if isinstance(c, tuple) else c
             for c in cells]
    return new_notebook(cells=built, metadata=copy.deepcopy(METADATA))


def main(nb: nbformat.NotebookNode, name: str, argv=None) -> Path:
    """Write ``nb`` as ``notebooks/<name>``; with ``--execute`` in ``argv`` (default: sys.argv) also run a copy."""
    argv = sys.argv[1:] if argv is None else argv
    out = NOTEBOOKS / name
    nbformat.write(nb, out)
    print("wrote", out)
    if "--execute" in argv:
        from nbclient import NotebookClient

        os.environ.setdefault("WORKBENCH_QUICK", "1")
        executed = copy.deepcopy(nb)
        t0 = time.perf_counter()
        NotebookClient(executed, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(out.parent)}}).execute()
        for cell in executed.cells:
            for o in cell.get("outputs", []):
                if o.get("output_type") == "stream":
                    print(o.get("text", ""), end="")
        print(f"executed OK in {time.perf_counter() - t0:.1f} s (WORKBENCH_QUICK={os.environ['WORKBENCH_QUICK']}); "
              "the written notebook has no outputs")
    return out
