"""Execute a notebook top to bottom in a real Jupyter kernel (quick mode) and fail on any cell error."""
from __future__ import annotations

import os
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(path: str | os.PathLike, timeout: int = 600, quick: bool = True):
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    if not path.is_absolute():
        path = ROOT / path
    nb = nbformat.read(path, as_version=4)
    env_backup = os.environ.get("WORKBENCH_QUICK")
    if quick:
        os.environ["WORKBENCH_QUICK"] = "1"
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
        client.execute()
    finally:
        if env_backup is None:
            os.environ.pop("WORKBENCH_QUICK", None)
        else:
            os.environ["WORKBENCH_QUICK"] = env_backup
    return nb


def notebook_results(nb) -> dict:
    """The JSON of the one ``RESULTS {...}`` line an executed paper-reproduction notebook printed."""
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    lines = [l for l in text.splitlines() if l.startswith("RESULTS ")]
    assert len(lines) == 1, "the notebook prints exactly one RESULTS line"
    return json.loads(lines[0][len("RESULTS "):])
