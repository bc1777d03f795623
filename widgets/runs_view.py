"""The dashboard's Runs view: browse the results folder, filter by problem / optimizer / status, overlay the selected
runs (any per-step variable, aligned by step or wall time), open one in the Train view, and delete files only after
a confirmation (a second click on the same selection). Only the ``*.nc`` files directly in the results folder are
listed, opened or deleted (``widgets.compare.runs_index`` skips symlinks and names that leave the folder, and every
name is checked again with ``widgets.files.safe_path`` before it is touched)."""
from __future__ import annotations

import math
import os
from pathlib import Path

import panel as pn

import workbench as wb

from .compare import COLORS, compare_runs, runs_index
from .files import safe_path
from .safe import message_pane
from .safe import text as escape

__all__ = ["RunsView", "MAX_OVERLAY", "row_label"]

MAX_OVERLAY = len(COLORS)
ANY = "(any)"


def row_label(row: dict) -> str:
    """One line per file: name, problem, optimizer, lr, status, steps, final loss (plain text: a Select shows
    option labels as text, never as markup)."""
    lr = row.get("lr")
    fl = row.get("final_loss")
    parts = [row["file"], row.get("problem") or "?", row.get("optimizer") or "?",
             f"lr={lr:.3g}" if isinstance(lr, float) and math.isfinite(lr) else "lr=?",
             row.get("status") or "?", f"{row.get('steps', 0)} steps",
             f"loss {fl:.4g}" if isinstance(fl, float) and math.isfinite(fl) else "loss n/a"]
    if row.get("kind") not in ("run", None, ""):
        parts.insert(1, f"[{row['kind']}]")
    return " · ".join(str(p) for p in parts)


class RunsView:
    """The Runs tab of a :class:`widgets.Dashboard` (``dash.runs_view``).

    Python API: ``refresh()``, ``select(files)``, ``overlay()`` (the comparison figure, also shown), ``delete()``
    (first call asks for confirmation, a second one with the same selection deletes), ``open()`` (the first selected
    run in the Train view)."""

    def __init__(self, dashboard):
        self.dash = dashboard
        self.rows: list[dict] = []
        self._cache: dict[str, tuple] = {}           # file -> (mtime, record)
        self._pending: tuple | None = None           # the selection a Delete click asked to confirm
        self.problem = pn.widgets.Select(label="problem", options=[ANY], value=ANY, width=150,
                                         css_classes=["wb-runs-problem"])
        self.optimizer = pn.widgets.Select(label="optimizer", options=[ANY], value=ANY, width=120,
                                           css_classes=["wb-runs-optimizer"])
        self.status_filter = pn.widgets.Select(label="status", options=[ANY], value=ANY, width=110,
                                               css_classes=["wb-runs-status-filter"])
        self.refresh_button = pn.widgets.Button(label="↻ Refresh", width=90, css_classes=["wb-runs-refresh"])
        self.select_box = pn.widgets.MultiSelect(label="runs in the results folder (newest first; ctrl-click for "
                                                      "several)", options={}, size=10,
                                                 sizing_mode="stretch_width", css_classes=["wb-runs-select"])
        self.var = pn.widgets.Select(label="variable", options=["loss"], value="loss", width=160,
                                     css_classes=["wb-runs-var"])
        self.align = pn.widgets.Select(label="align by", options={"step": "step", "wall time": "wall_time"},
                                       value="step", width=110, css_classes=["wb-runs-align"])
        self.open_button = pn.widgets.Button(label="Open in Train view", width=150, css_classes=["wb-runs-open"])
        self.delete_button = pn.widgets.Button(label="Delete selected", color="danger", width=150,
                                               css_classes=["wb-runs-delete"])
        self.status = message_pane(["wb-runs-status"], color=None, visible=True)
        self.error = message_pane(["wb-error", "wb-runs-error"])
        self.plot = pn.pane.Plotly({"data": [], "layout": {}}, sizing_mode="stretch_width", height=400,
                                   css_classes=["wb-runs-plot"], visible=False)
        for w in (self.problem, self.optimizer, self.status_filter):
            w.param.watch(lambda e: self.refresh(), "value")
        self.select_box.param.watch(lambda e: self._selection_changed(), "value")
        self.var.param.watch(lambda e: self.overlay(), "value")
        self.align.param.watch(lambda e: self.overlay(), "value")
        self.refresh_button.on_click(lambda e: self.refresh())
        self.open_button.on_click(lambda e: self.open())
        self.delete_button.on_click(lambda e: self.delete())
        self.layout = pn.Column(
            pn.pane.HTML("<b>Runs</b>: the records in the results folder. Select several to overlay them.",
                         sizing_mode="stretch_width"),
            pn.Row(self.problem, self.optimizer, self.status_filter,
                   pn.Column(pn.Spacer(height=18), self.refresh_button, margin=0), margin=0),
            self.select_box,
            pn.Row(self.var, self.align, pn.Column(pn.Spacer(height=18), pn.Row(self.open_button,
                                                                                 self.delete_button, margin=0),
                                                    margin=0), margin=0),
            self.error, self.status, self.plot, sizing_mode="stretch_width", css_classes=["wb-runs-view"])
        self.refresh()

    # -- listing ---------------------------------------------------------------------------------------------
    def _filter(self, w):
        return None if w.value in (ANY, None, "") else w.value

    def refresh(self):
        """Re-read the results folder (keeping the selection where the files are still there)."""
        self._show_error("")
        root = Path(self.dash.results_dir)
        if not root.is_dir():
            self.rows = []
        else:
            try:
                every = runs_index(root)
            except ValueError as exc:
                self._show_error(str(exc))
                every = []
            for w, key in ((self.problem, "problem"), (self.optimizer, "optimizer"), (self.status_filter, "status")):
                opts = [ANY] + sorted({r[key] for r in every if r[key]})
                if w.value not in opts:
                    opts.append(w.value)
                if list(w.options) != opts:
                    w.options = opts
            p, o, s = self._filter(self.problem), self._filter(self.optimizer), self._filter(self.status_filter)
            self.rows = [r for r in every if (not p or r["problem"] == p) and (not o or r["optimizer"] == o)
                         and (not s or r["status"] == s)]
        keep = [f for f in self.select_box.value if any(r["file"] == f for r in self.rows)]
        self.select_box.options = {row_label(r): r["file"] for r in self.rows}
        self.select_box.value = keep
        self.status.object = escape(f"{len(self.rows)} record(s) shown" + (f", {len(keep)} selected" if keep
                                                                             else ""))
        return self.rows

    def select(self, files):
        self.select_box.value = [f for f in files if f in self.select_box.options.values()]
        return self.select_box.value

    # -- overlay ---------------------------------------------------------------------------------------------
    def _record(self, file):
        path = safe_path(self.dash.results_dir, file, ".nc")
        if path.is_symlink() or not path.is_file():
            raise ValueError(f"file {file!r} is not a record in the results folder")
        mtime = path.stat().st_mtime
        hit = self._cache.get(file)
        if hit is not None and hit[0] == mtime:
            return hit[1]
        rec = wb.load(path)
        self._cache[file] = (mtime, rec)
        if len(self._cache) > 64:
            self._cache.pop(next(iter(self._cache)))
        return rec

    def _selection_changed(self):
        if self._pending is not None and tuple(sorted(self.select_box.value)) != self._pending:
            self._pending = None
            self.delete_button.label = "Delete selected"
        self.overlay()

    def overlay(self):
        """Overlay the selected runs' ``variable``; returns the plotly Figure (None with the reason shown)."""
        self._show_error("")
        files = list(self.select_box.value)
        if not files:
            self.plot.visible = False
            return None
        if len(files) > MAX_OVERLAY:
            self._show_error(f"selection: {len(files)} runs is out of range: overlay at most {MAX_OVERLAY}")
            return None
        recs = {}
        for f in files:
            try:
                rec = self._record(f)
            except (ValueError, OSError, KeyError) as exc:
                self._show_error(f"{f}: {exc}")
                return None
            if rec.attrs.get("kind") == "sweep":
                self._show_error(f"{f} is a sweep: open it in the Sweep view's phase diagram")
                return None
            recs[Path(f).stem] = rec
        per_step = sorted({v for r in recs.values() for v in r.data_vars
                           if r[v].ndim == 1 and (r[v].dims[0] == "step" or r[v].dims[0].endswith("_step"))
                           and r[v].dtype.kind in "fiu"})
        opts = ["loss"] + [v for v in per_step if v != "loss"]
        if list(self.var.options) != opts:
            cur = self.var.value
            self.var.options = opts
            if cur in opts:
                self.var.value = cur
        var = self.var.value
        have = {k: r for k, r in recs.items() if var in r.data_vars}
        if not have:
            self._show_error(f"variable {var!r}: none of the selected runs recorded it")
            return None
        try:
            fig = compare_runs(have, var=var, align=self.align.value)
        except ValueError as exc:
            self._show_error(str(exc))
            return None
        self.plot.object = fig
        self.plot.visible = True
        missing = sorted(set(recs) - set(have))
        self.status.object = escape(f"{len(have)} run(s) overlaid" + (f"; without {var}: {', '.join(missing)}"
                                                                     if missing else ""))
        return fig

    # -- actions ---------------------------------------------------------------------------------------------
    def open(self):
        files = list(self.select_box.value)
        if not files:
            self._show_error("Select a run to open.")
            return None
        ds = self.dash.load(Path(files[0]).stem)
        if ds is not None:
            self.dash.tabs.active = 0
        return ds

    def delete(self):
        """First call: ask to confirm (the button says how many); a second call on the same selection deletes the
        selected files (only ``*.nc`` files directly in the results folder). Returns the deleted names."""
        self._show_error("")
        files = sorted(self.select_box.value)
        if not files:
            self._show_error("Select the runs to delete first.")
            return []
        if self._pending != tuple(files):
            self._pending = tuple(files)
            self.delete_button.label = f"Confirm delete ({len(files)})"
            self.status.object = escape(f"Click “Confirm delete ({len(files)})” to delete {', '.join(files)} "
                                        "for good; change the selection to cancel.")
            return []
        self._pending = None
        self.delete_button.label = "Delete selected"
        deleted, failed = [], []
        for f in files:
            try:
                path = safe_path(self.dash.results_dir, f, ".nc")
                if path.is_symlink() or not path.is_file():
                    raise ValueError("not a record file in the results folder")
                os.unlink(path)
                self._cache.pop(f, None)
                deleted.append(f)
            except (ValueError, OSError) as exc:
                failed.append(f"{f}: {exc}")
        self.select_box.value = []
        self.refresh()
        try:
            self.dash._refresh_files()
        except Exception:  # the Train view's file list is refreshed on its next ↻ anyway
            pass
        self.status.object = escape(f"Deleted {len(deleted)} file(s): {', '.join(deleted)}" if deleted else
                                    "Nothing deleted.")
        if failed:
            self._show_error("Not deleted: " + "; ".join(failed))
        return deleted

    def _show_error(self, msg):
        self.error.object = escape(msg)
        self.error.visible = bool(msg)
