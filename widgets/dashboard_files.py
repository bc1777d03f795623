"""The Dashboard's files: export a record (netCDF, atomic) with its figures (HTML, and PNG in the background),
load a saved record or view one in memory (a sweep cell). Only the results folder is read or written; names are
checked against path traversal (widgets.files.safe_path). A mixin of ``widgets.dashboard.Dashboard``."""
from __future__ import annotations

import os
import re
import tempfile
import time

import numpy as np

import workbench as wb

from . import views as V
from .files import list_records, safe_path
from .safe import Markup
from .safe import text as escape

__all__ = ["FilesMixin", "has_kaleido"]


def has_kaleido() -> bool:
    import importlib.util
    return importlib.util.find_spec("kaleido") is not None


class FilesMixin:
    """Export and load (see the module doc)."""

    def _refresh_files(self):
        self.load_select.options = list_records(self.results_dir)

    def _file_error(self, msg):
        self.file_error.object = escape(msg)
        self.file_error.visible = bool(msg)

    def current_record(self):
        """The run's record (a worker process is asked for it) or the viewed one; None when there is none."""
        return self.session.record

    def export(self, name: str | None = None, png: bool = False):
        """Save the current record as ``<results>/<name>.nc`` and its figures as ``<name>.html``; with
        ``png=True`` (needs kaleido) also ``<name>_<view>.png`` for every shown view, written in a background
        thread (``self.tasks``, job "png"; the file status says when they are done).

        Returns the two paths, or None with the error shown beside the file-name field (bad name, path
        traversal, nothing to export)."""
        self._file_error("")
        ds = self.current_record()
        if ds is None:
            self._file_error("Nothing to export yet: run (or load) something first.")
            return None
        if not name:
            name = f"{ds.attrs.get('problem', 'run')}_{ds.attrs.get('optimizer', '')}_{time.strftime('%Y%m%d-%H%M%S')}"
            name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:100]     # a user problem may be named freely
        try:
            nc = safe_path(self.results_dir, name, ".nc")
            html = safe_path(self.results_dir, nc.stem, ".html")     # checked too: it may be a symlink out
            self.results_dir.mkdir(parents=True, exist_ok=True)
            wb.save(ds, nc)
            figs = self.figures()
            page = V.figures_html(figs, title=f"{ds.attrs.get('problem')} · {ds.attrs.get('optimizer')}")
            fd, tmp = tempfile.mkstemp(prefix=f".{html.name}.", suffix=".tmp", dir=html.parent)  # a new file
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(page)
                os.replace(tmp, html)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        except (ValueError, OSError) as exc:
            self._file_error(str(exc))
            return None
        self.file_status.object = escape(f"Saved {nc.name} and {html.name} in the results folder.")
        self._refresh_files()
        if png:
            self._export_png(nc.stem, figs)
        return nc, html

    def _export_png(self, stem, figs):
        if not has_kaleido():
            self._file_error("PNG export needs the kaleido package (pip install kaleido) and Chrome/Chromium.")
            return None
        try:
            paths = {view: safe_path(self.results_dir, f"{stem}_{view}", ".png") for view in figs}
        except ValueError as exc:       # e.g. a 100-character name plus "_sharpness"
            self._file_error(f"PNG export: {exc}")
            return None

        def work():
            import plotly.io as pio
            for view, fig in figs.items():
                pio.write_image(fig, paths[view], width=900, height=450, validate=False)
            return f"PNG written: {', '.join(p.name for p in paths.values())}"

        t = self.tasks.submit("png", work)       # kaleido/Chromium failures come back as the task's error
        self._ensure_polling()
        return t

    def _show_record(self, ds, snap: dict) -> None:
        """Stop any run and show record ``ds`` (its snapshot ``snap``) in the views; used by ``load`` (a file) and
        ``view_record`` (a record in memory, e.g. a sweep cell). The session rebuilds the problem from the record's
        config so that 2D functions show their path."""
        self.session.view(ds, snap["label"])
        self._set_buttons(live=False)
        self._clear_views()
        prob = self._problem_obj
        if prob is not None and prob.kind == "function" and "trajectory" in ds:
            snap["path"] = np.asarray(ds["trajectory"].values, dtype=float)
        self._render(snap, heavy=True, loaded=ds)

    def load(self, name: str | None):
        """View a saved record (``<results>/<name>.nc``) again; it can be pinned like a run."""
        self._file_error("")
        if not name:
            self._file_error("No saved record selected.")
            return None
        try:
            path = safe_path(self.results_dir, name, ".nc")
            if not path.is_file():
                raise ValueError(f"no saved record named {name!r} in the results folder")
            ds = wb.load(path)
            snap = V.snapshot_record(ds, label=f"{ds.attrs.get('optimizer', '?')} ({path.stem})")
        except (ValueError, OSError, KeyError) as exc:
            self._file_error(str(exc))
            return None
        self._show_record(ds, snap)
        self.status.object = (Markup(f"Viewing saved record <b>{escape(path.stem)}</b> · ")
                              + escape(f"{snap['problem']} · {snap['optimizer']} · {snap['status']} on "
                                       f"{ds.attrs.get('device', '?')} · "
                                       f"{len(snap['step'])} steps" + self._events_text(snap)))
        self.file_status.object = escape(f"Loaded {path.name}.")
        return ds

    def view_record(self, ds, name: str):
        """View a record already in memory (e.g. a sweep cell opened from the Sweep view) as ``load`` does."""
        self._file_error("")
        try:
            snap = V.snapshot_record(ds, label=f"{ds.attrs.get('optimizer', '?')} ({name})")
        except (ValueError, KeyError) as exc:
            self._file_error(str(exc))
            return None
        self._show_record(ds, snap)
        self.status.object = (Markup("Viewing <b>") + escape(name) + Markup("</b> · ")
                              + escape(f"{snap['problem']} · {snap['optimizer']} · {snap['status']} · "
                                       f"{len(snap['step'])} steps" + self._events_text(snap)))
        return ds

    def figures(self) -> dict[str, dict]:
        """The figures currently shown (plain plotly dicts), by view name."""
        out = {}
        for name, pane in self.panes.items():
            if pane.visible and isinstance(pane.object, dict) and pane.object.get("data"):
                out[name] = pane.object
        return out
