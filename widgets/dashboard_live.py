"""The Dashboard's live views: a periodic callback pulls what is new from the run's handle (a thread here or a worker
process) and redraws only the figures that changed, at most every ``LIGHT_EVERY_S`` / ``HEAVY_EVERY_S``; the PCA
plane of a network's trajectory is computed off the UI thread (in the run's worker process, or a ``Tasks`` job);
the Landscape tab shows the path as contours or a rotatable 3D surface and replays it with a step slider. A mixin of
``widgets.dashboard.Dashboard``."""
from __future__ import annotations

import time

import numpy as np
import panel as pn

from . import views as V
from .runspec import PLANE_MIN_SNAPSHOTS, compute_plane
from .safe import Markup
from .safe import text as escape
from .server_load import _LIVE, render_every

__all__ = ["LiveMixin", "READY", "POLL_MS"]

POLL_MS = 250
FAST_POLL_MS, FAST_START_S = 100, 2.0    # the first seconds of a run: polled and drawn at 10 Hz (it moves most then)
LIGHT_EVERY_S = 0.5         # later the loss view re-renders at most this often: the browser's re-render costs as
                            # much CPU as training on a small machine (measured); see widgets.server_load
HEAVY_EVERY_S = 1.0         # the heavier views re-render at most this often
PLANE_EVERY_S = 4.0         # the PCA-plane surface is recomputed (off the UI thread) at most this often
READY = Markup("Ready. Pick a problem and an optimizer (or a preset), then press <b>Run</b>.")
_VIEWS = {"loss": ("loss", 320), "accuracy": ("acc", 280), "sharpness": ("sharpness", 300), "eigs": ("eigs", 280),
          "spectrum": ("spectrum", 280), "subspace": ("subspace", 280), "norms": ("norms", 280),
          "path": ("path", 430), "landscape": ("landscape", 520)}


def _last(y):
    if y is None or not len(y):
        return None
    v = float(np.asarray(y[-1], dtype=float))
    return None if not np.isfinite(v) else v


class LiveMixin:
    """Polling, rendering and the landscape views (see the module doc)."""

    def _init_live(self):
        self.first_point_latency = None
        self._cb = None
        self._background = None          # 2D function heatmap (figure dict)
        self._sigs: dict[str, tuple] = {}
        self._snap = None
        self._shown = -1
        self._last_heavy = 0.0
        self._last_light = 0.0
        self._final_done = False
        self._waiting_shown = False
        self._plane_t = 0.0
        self._plane_n = 0
        self._plane = None               # the last PCA-plane result (figure dict + what the 3D view needs)
        self._t_start = time.perf_counter()

    def _build_views(self):
        self.panes = {name: pn.pane.Plotly({"data": [], "layout": {}}, sizing_mode="stretch_width", height=h,
                                           css_classes=[f"wb-{css}-plot"], visible=name == "loss")
                      for name, (css, h) in _VIEWS.items()}
        self.loss_pane, self.path_pane = self.panes["loss"], self.panes["path"]
        self.loss_pane.object = V.loss_figure()
        self.landscape_mode = pn.widgets.RadioButtonGroup(options=["contours", "3D surface"], value="contours",
                                                          css_classes=["wb-landscape-mode"])
        self.replay_slider = pn.widgets.IntSlider(label="replay step", start=0, end=1, value=1, disabled=True,
                                                  css_classes=["wb-replay"], sizing_mode="stretch_width")
        self.landscape_note = pn.pane.HTML("Run (or load) something to see its path on the loss surface.",
                                           css_classes=["wb-landscape-note"], sizing_mode="stretch_width")
        self.landscape_mode.param.watch(lambda e: self._draw_landscape(), "value")
        self.replay_slider.param.watch(lambda e: self._draw_landscape(), "value")

    # -- polling -------------------------------------------------------------------------------------------
    def _ensure_polling(self, fast: bool = False):
        """Poll (``_tick``) while something is live; ``fast``: a run just started (``FAST_POLL_MS`` for
        ``FAST_START_S``, so its first steps show within a fraction of a second)."""
        period = FAST_POLL_MS if fast else POLL_MS
        if self._cb is None:
            try:
                self._cb = pn.state.add_periodic_callback(self._tick, period=period, start=True)
            except Exception:  # no event loop (plain Python): callers use tick() themselves
                self._cb = None
            return
        if fast and self._cb.period != period:
            self._cb.period = period
        if not self._cb.running:
            self._cb.start()

    def tick(self):
        """Pull new values from the run into the views (called periodically while a run is live)."""
        self._tick()

    def _idle(self):
        h = self.run
        run_idle = h is None or (h.done and self._final_done and not getattr(h, "plane_pending", False))
        return run_idle and not self.tasks.busy() and not self._racers

    def _tick(self):
        h = self.run
        try:
            self._collect_tasks()
            self._collect_racers()
            if h is None:
                if self._idle() and self._cb is not None and self._cb.running:
                    self._cb.stop()
                return
            now = time.perf_counter()
            done = h.done
            state = self.session.poll_state()
            n = h.n
            waiting = state == "paused"
            if n == self._shown and not (done and not self._final_done) and waiting == self._waiting_shown:
                if state == "queued":
                    self._status_text(h, None)
                return
            starting = now - self._t_start < FAST_START_S
            if not starting and self._cb is not None and self._cb.period != POLL_MS:
                self._cb.period = POLL_MS
            if done:
                _LIVE.discard(id(self))
            else:
                _LIVE.add(id(self))
            if not done and not starting and self._shown > 0 and waiting == self._waiting_shown \
                    and now - self._last_light < render_every(LIGHT_EVERY_S):
                return
            self._last_light = now
            heavy = done or now - self._last_heavy >= render_every(HEAVY_EVERY_S)
            snap = h.snapshot(probes=heavy)
            if heavy:
                self._last_heavy = now
            self._render(snap, heavy=heavy)
            if self.first_point_latency is None and n > 0:
                self.first_point_latency = time.perf_counter() - self._t_start
            self._shown = n
            self._status_text(h, snap)
            if heavy and h.problem_kind != "function":
                self._maybe_plane(h, final=done)
            if done:
                self._set_buttons(live=False)
                self._final_done = True
                if self._idle() and self._cb is not None and self._cb.running:
                    self._cb.stop()
        except Exception as exc:  # never let a view update kill the session
            self._show_error(f"view update failed: {type(exc).__name__}: {exc}")
            if h is not None and h.done:      # do not poll a finished run forever
                self._final_done = True
                self._set_buttons(live=False)
                if self._cb is not None and self._cb.running and self._idle():
                    self._cb.stop()

    @staticmethod
    def _events_text(snap):
        evs = snap.get("events") or []
        if not evs:
            return ""
        return " · swaps: " + ", ".join(f"step {e.get('step')} → {e.get('optimizer')}"
                                        + (f" ({', '.join(e['changed'])})" if 0 < len(e.get("changed") or []) <= 2
                                           else "") for e in evs[-4:])

    def _status_text(self, h, snap):
        state = self.session.state
        self._waiting_shown = state == "paused"
        if state == "queued":
            pos = self.session.pool.position(h) if self.session.pool is not None else None
            self.status.object = Markup("<b>queued</b> · ") + escape(
                f"every worker is busy; this run starts when one is free (place {pos} in the queue)"
                if pos else "starting a worker process")
            return
        n = len(snap["step"])
        last = snap["loss"][-1] if n else float("nan")
        elapsed = snap["wall_time"][-1] if n else 0.0
        shown = "paused" if state == "paused" else h.status if h.status != "starting" else "running"
        text = Markup(f"<b>{escape(shown)}</b> on {escape(str(h.device))} · ") + escape(
            f"step {n} / {h.steps} · loss {last:.5g} · {h.optimizer_name} · {elapsed:.2f} s"
            + self._events_text(snap))
        blew = V.blowup_after_swap(snap)
        if blew is not None:
            ev, f = blew
            what = "diverged" if f == float("inf") else f"loss ×{f:.3g}"
            text += escape(f" · blew up after the swap to {ev.get('optimizer')} at step {ev.get('step')} ({what})")
            if h.done and h.status != "diverged":
                self._show_error(f"The loss blew up after the swap to {ev.get('optimizer')} at step "
                                 f"{ev.get('step')} ({what}); try a smaller lr for it.")
        if h.status == "diverged":
            text += escape(f" · diverged at step {h.diverged_at}")
            self._show_error(f"The run diverged at step {h.diverged_at} (loss {last:.3g}); try a smaller learning "
                             "rate. Everything before it is kept.")
            self.hparam_form.show_error("lr", f"diverged at step {h.diverged_at} with this lr")
        if h.status == "crashed":
            self._show_error(f"The run crashed at step {h.step}: {h.error_text}")
        swap_errors = getattr(h, "swap_errors", None)
        while swap_errors:
            self._show_error(swap_errors.pop(0))
        self.status.object = text

    # -- drawing -------------------------------------------------------------------------------------------
    def _assign(self, name, fig):
        """Send a figure only if it differs from what the browser has (cheap signature of every trace)."""
        pane = self.panes[name]
        if fig is None:
            pane.visible = False
            self._sigs.pop(name, None)
            return
        sig = (tuple((t.get("name"), t.get("type"), len(t["x"]) if t.get("x") is not None else 0,
                      _last(t.get("y"))) for t in fig["data"]),
               len(fig["layout"].get("shapes", ())), str(fig["layout"].get("title")),
               fig["layout"].get("yaxis", {}).get("type"))
        if self._sigs.get(name) != sig or not pane.visible:
            self._sigs[name] = sig
            pane.object = fig
            pane.visible = True

    def _render(self, snap, heavy=True, loaded=None):
        self._snap = snap
        pins = self.pins
        self._assign("loss", V.loss_figure(snap, pins))
        if not heavy:
            return
        builders = {"accuracy": V.accuracy_figure, "sharpness": V.sharpness_figure, "eigs": V.eigs_figure,
                    "spectrum": V.spectrum_figure, "subspace": V.subspace_figure, "norms": V.norms_figure}
        for name, build in builders.items():
            self._assign(name, build(snap, pins))
        prob = self._problem_obj
        if prob is not None and prob.kind == "function" and snap.get("path") is not None:
            same = [p for p in pins if p["problem"] == prob.name]
            self._assign("path", V.function_path_figure(self._function_bg(prob), snap["path"], snap["events"],
                                                        snap.get("path_steps"), pins=same))
            self._replay_range(len(snap["path"]))
            self._draw_landscape()
        elif loaded is not None and "trajectory" in loaded and prob is not None and prob.kind != "function":
            self._start_plane(loaded, prob, snap["label"])

    def _clear_views(self):
        self._sigs = {}
        self._snap = None
        self._shown = -1
        self._plane = None
        self.loss_pane.object = V.loss_figure(None, self.pins)
        for name, pane in self.panes.items():
            if name != "loss":
                pane.visible = False
        self.replay_slider.disabled = True
        self.landscape_note.visible = True
        self._show_idle_path()

    def _pins_changed(self):
        self.pins_text.object = "" if not self.pins else escape("Pinned: " + "; ".join(
            f"{p['label']} ({p['problem']}, {len(p['step'])} steps)" for p in self.pins))
        self._shown = -1
        self._sigs = {}
        if self._snap is not None:
            self._render(self._snap, heavy=True)
        else:
            self.loss_pane.object = V.loss_figure(None, self.pins)
            self._show_idle_path()

    def _show_idle_path(self):
        """Before a run: the 2D test function's surface with its start point (and pinned paths)."""
        if self.run is not None or self.loaded is not None:
            return
        if not self._is_function(self.problem_select.value):   # never load a dataset just to pick a view
            self.path_pane.visible = False
            return
        try:
            prob = self._problem_obj or self._make_problem()
        except ValueError:
            return
        self._problem_obj = prob
        start = np.array([[prob.options["x0"], prob.options["y0"]]])
        self._sigs.pop("path", None)
        self.path_pane.object = V.function_path_figure(self._function_bg(prob), start,
                                                       pins=[p for p in self.pins if p["problem"] == prob.name])
        self.path_pane.visible = True

    def _function_bg(self, prob):
        if self._background is None or self._background[0] != prob.config():
            self._background = (prob.config(), V.function_background(prob))
        return self._background[1]

    # -- the Landscape tab: contours or 3D, replayed with the step slider -----------------------------------
    def _replay_range(self, n_points: int):
        """The slider spans the path's points; it follows the live end unless the user moved it back."""
        s = self.replay_slider
        at_end = s.value >= s.end or s.disabled
        s.end = max(1, n_points - 1)
        s.disabled = n_points < 2
        if at_end:
            s.value = s.end

    def _landscape_path(self):
        """(points, steps, kind) of what the Landscape tab draws, or None."""
        prob = self._problem_obj
        if self._snap is not None and prob is not None and prob.kind == "function" and \
                self._snap.get("path") is not None:
            return self._snap["path"], self._snap.get("path_steps"), "function"
        if self._plane is not None and self._plane.get("xy") is not None:
            return self._plane["xy"], None, "plane"
        return None

    def _draw_landscape(self):
        got = self._landscape_path()
        pane = self.panes["landscape"]
        if got is None:
            pane.visible = False
            self.landscape_note.visible = True
            return
        pts, steps, kind = got
        upto = min(int(self.replay_slider.value), len(pts) - 1) if not self.replay_slider.disabled else None
        three_d = self.landscape_mode.value == "3D surface"
        prob = self._problem_obj
        pins = [p for p in self.pins if prob is not None and p["problem"] == prob.name]
        if kind == "function":
            bg = self._function_bg(prob)
            events = self._snap.get("events", ())
            fig = V.surface3d_figure(bg, pts, z=V.path_heights(prob, pts, bg), steps=steps, upto=upto, pins=pins,
                                     events=events) if three_d else \
                V.function_path_figure(bg, pts, events, steps, pins=pins, upto=upto)
        else:
            surf, label = self._plane.get("surface"), self._plane.get("label", "run")
            if three_d and surf is not None:
                fig = V.plane_surface3d_figure(surf, [(label, pts)], self._plane.get("explained"), upto=upto,
                                               steps=self._plane.get("steps"))
            else:
                fig = V.plane_figure(surf, [(label, pts)], self._plane.get("explained"), upto=upto,
                                     steps=self._plane.get("steps"))
        self.landscape_note.visible = False
        pane.object = fig
        pane.visible = True

    # -- the PCA plane (networks), computed off the UI thread ----------------------------------------------
    def _maybe_plane(self, h, final=False):
        if "trajectory" not in (h.probe_names or ()):
            return
        if self.tasks.busy("plane"):
            return
        if hasattr(h, "request_plane") and h.done:    # a worker sends its final plane by itself after the record
            return
        n_snap = h.trajectory_count()
        if n_snap < PLANE_MIN_SNAPSHOTS or n_snap == self._plane_n:
            return
        if not final and time.perf_counter() - self._plane_t < PLANE_EVERY_S:
            return
        self._plane_n = n_snap
        label = f"{h.optimizer_name} (this run)"
        if hasattr(h, "request_plane"):           # a worker process computes it next to its run
            self._plane_t = time.perf_counter()
            h.request_plane(label)
        else:
            self._start_plane(h, h.run.problem, label)

    def _start_plane(self, source, problem, label):
        self._plane_t = time.perf_counter()
        rec = source if not hasattr(source, "record") else None

        def work():
            return compute_plane(rec if rec is not None else source.record, problem, label=label)

        self.tasks.submit("plane", work)
        self._ensure_polling()

    def _show_plane(self, res):
        if res is None:
            return
        if "error" in res:
            self._show_error(res["error"])
            return
        fig = res.get("figure", res)
        self._plane = res if "figure" in res else None
        self._sigs.pop("path", None)
        self.path_pane.object = fig
        self.path_pane.visible = True
        if self._plane is not None:
            self._replay_range(len(self._plane["xy"]))
            self._draw_landscape()

    def _collect_tasks(self):
        h = self.run
        res = getattr(h, "plane_result", None)
        if res is not None:
            h.plane_result = None
            self._show_plane(res)
        for name, result, err in self.tasks.collect():
            if name == "plane":
                self._show_plane({"error": f"PCA-plane view: {err}"} if err else result)
            elif name == "png":
                if err:
                    self._file_error(f"PNG export failed: {err}")
                else:
                    self.file_status.object = escape(result)

    def _collect_racers(self):
        """Pin the race's runs in their order as they end."""
        while self._racers and self._racers[0][1].done:
            opt, h = self._racers.pop(0)
            if h.status == "crashed":
                self._show_error(f"race: {opt}: {h.error_text}")
                continue
            snap = h.snapshot(probes=True)
            self.pin(snap)
