"""The dashboard's first minute (issue 14): no Panel deprecation warnings, a default page whose first Run moves,
a warning (and a status mark) when a hot swap carries an lr the new optimizer blows up with, pins that keep their
own threshold and swaps and stay visible, a symmetric-log loss axis for unbounded losses, readable log ticks, the
update norm on its own axis, and start/end markers on the trajectory plane. No server, no browser."""
import re
import time
import warnings

import numpy as np
import pytest

import workbench as wb
from widgets import Dashboard
from widgets import views as V
from widgets.presets import DEFAULT_PRESET, PRESETS
from widgets.safe import text as escape
from workbench.optim.registry import TYPICAL_LR, typical_lr


def drive(d, until=None, timeout=120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        d.tick()
        if (until is not None and until()) or (until is None and d.run is not None and d.run.done
                                               and d._final_done):
            return d.run
        time.sleep(0.02)
    raise AssertionError("dashboard did not get there in time")


def _ours(w) -> bool:
    """A deprecation warning from Panel/Bokeh/param, or one our widgets code triggered."""
    if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning, FutureWarning)):
        return False
    where = str(w.filename).replace("\\", "/")
    return any(k in where for k in ("/widgets/", "/panel/", "/bokeh/", "/param/")) or \
        "version 2.0" in str(w.message)


# -- 1. no deprecation warnings ------------------------------------------------------------------------------
def test_building_the_page_a_preset_and_a_run_emit_no_panel_deprecations(tmp_path):
    from widgets import app as wapp
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        page = wapp.create_app(tmp_path / "results")
        d = page.dashboard
        d.apply_preset("saddle escape", race=False)
        d.run_form.widgets["steps"].value = "40"
        run = d.start()
        assert run is not None
        drive(d)
        d.pin()
        d.optimizer_select.value = "adam"
        d.reset()
    bad = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in caught if _ours(w)]
    assert bad == [], bad[:5]


# -- 2. the default page -------------------------------------------------------------------------------------
def test_default_page_first_run_drops_the_loss_by_orders_of_magnitude(tmp_path):
    from widgets import app as wapp
    d = wapp.create_app(tmp_path / "results").dashboard
    assert d.preset_select.value == DEFAULT_PRESET and DEFAULT_PRESET in PRESETS
    assert d.problem_select.value == PRESETS[DEFAULT_PRESET]["problem"]
    assert d.optimizer_select.value == PRESETS[DEFAULT_PRESET]["optimizer"]
    assert d.preset_doc.object == PRESETS[DEFAULT_PRESET]["doc"]          # what it shows is said
    assert [n for n, cb in d.probe_checks.items() if cb.value] == ["eval"]   # the usual probes stay on
    run = d.start()
    assert run is not None, d.error.object
    drive(d)
    loss = run.record.loss.values
    assert run.status == "finished" and np.isfinite(loss).all()
    assert loss[0] / loss[:50].min() > 5           # visible within the first 50 steps (Adam 1e-3 there: 1.9x)
    assert loss[0] / loss.min() > 1e3              # and it reaches the minimum (Adam 1e-3: 5.7x)
    assert d.path_pane.visible and len(d.path_pane.object["data"][-1]["x"]) >= len(loss)


def test_every_preset_is_still_one_click_away(tmp_path):
    from widgets import app as wapp
    d = wapp.create_app(tmp_path / "results").dashboard
    assert set(PRESETS) <= set(d.preset_select.options)
    d.apply_preset("saddle escape", race=False)
    assert d.problem_select.value == "saddle" and d.optimizer_select.value == "gd"


# -- 3. swaps: typical lr ranges, a warning, and a blow-up in the status ------------------------------------------
def test_every_optimizer_has_a_typical_lr_range_holding_its_default():
    for name in wb.optimizers.list():
        rng = typical_lr(name)
        lr = next((p.default for p in wb.optimizers.schema(name) if p.name == "lr"), None)
        if lr is None:
            continue
        assert rng is not None and 0 < rng[0] < rng[1], name
        assert rng[0] <= lr <= rng[1], (name, lr, rng)
    assert TYPICAL_LR["adam"] == (1e-5, 1e-2) and TYPICAL_LR["gd"] == (1e-4, 1.0)
    with pytest.raises(ValueError, match="optimizer="):
        typical_lr("no-such-optimizer")


def test_swap_carrying_a_large_lr_into_adam_warns_and_the_blowup_is_marked(tmp_path):
    d = Dashboard(problem="quadratic", optimizer="gd", results_dir=tmp_path)
    d.hparam_form.widgets["lr"].value = "0.1"
    d.run_form.widgets["steps"].value = "1000000"
    run = d.start()
    try:
        drive(d, until=lambda: run.n > 60)
        d.pause()
        drive(d, until=lambda: d.run.waiting)
        assert not d.error.visible
        d.optimizer_select.value = "adam"          # carries lr 0.1: ten times Adam's usual top
        msg = d._swap_lr_warning("adam", 0.1)
        assert "lr=0.1" in msg and "adam" in msg and "1e-02" in msg
        assert d.error.visible and d.error.object == escape(msg)
        d.resume()                                  # the swap applies before the next update
        drive(d, until=lambda: len(run.events) > 0)
        swap = run.events[-1]["step"]
        drive(d, until=lambda: run.n > swap + 100)
        d.stop(wait=5)
        drive(d)
    finally:
        d.stop()
        run.wait(30)
    status = str(d.status.object)
    assert f"blew up after the swap to adam at step {swap}" in status, status
    assert "blew up after the swap to adam" in str(d.error.object)
    assert d._swap_lr_warning("adam", 1e-3) == "" and d._swap_lr_warning("gd", 0.1) == ""
    assert "below its usual range" in d._swap_lr_warning("adam", 1e-8)


def test_blowup_detector_on_plain_snapshots():
    ev = [{"step": 50, "optimizer": "adam"}]
    calm = {"loss": np.r_[np.geomspace(6, 1e-3, 50), np.geomspace(1e-3, 1e-5, 50)], "events": ev}
    assert V.blowup_after_swap(calm) is None
    up = {"loss": np.r_[np.geomspace(6, 1e-3, 50), np.full(50, 0.5)], "events": ev}
    got = V.blowup_after_swap(up)
    assert got is not None and got[0]["step"] == 50 and 100 < got[1] < 1000
    nan = {"loss": np.r_[np.geomspace(6, 1e-3, 50), [1.0, np.nan]], "events": ev}
    assert V.blowup_after_swap(nan)[1] == float("inf")
    assert V.blowup_after_swap({"loss": up["loss"], "events": []}) is None


# -- 4. pins ----------------------------------------------------------------------------------------------------
def _snap(label, lr, events=(), n=100, scale=1.0):
    steps = np.arange(n)
    ps = np.arange(0, n, 10, dtype=float)
    return {"label": label, "problem": "p", "optimizer": "gd", "status": "finished", "diverged_at": None,
            "step": steps, "loss": scale * np.geomspace(2, 0.01, n), "lr": np.full(n, lr), "events": list(events),
            "probes": {"sharpness": (ps, np.linspace(1, 1.9 / lr, len(ps))),
                       "sharpness_threshold": (ps, np.full(len(ps), 2 / lr)),
                       "update_norm": (ps, np.full(len(ps), 1e-4)), "weight_norm": (ps, np.full(len(ps), 30.0))},
            "grids": {}}


def _plain(name):
    """No emoji / pictographs (the pin glyph rendered as an empty box)."""
    return all(ord(c) < 0x2190 or 0x2200 <= ord(c) < 0x2400 or c in "‖θ₀Δ⁻¹ᵀ↦→−²×·" for c in name)


def test_pins_keep_their_threshold_and_swaps_and_stay_visible():
    live = _snap("gd lr=0.1", 0.1)
    pin = _snap("adam lr=0.01", 0.01, events=[{"step": 40, "optimizer": "adam", "changed": ["lr"],
                                                "hparams": {"lr": 0.01}}])
    same = dict(live, label="gd lr=0.1 (same)")       # a pin identical to the live run
    fig = V.sharpness_figure(live, [pin, same])
    names = [t["name"] for t in fig["data"]]
    thr = [t for t in fig["data"] if "threshold" in t["name"] and t["name"].startswith("pinned: ")]
    assert len(thr) == 2 and np.allclose(thr[0]["y"], 200.0) and np.allclose(thr[1]["y"], 20.0)
    swaps = [s for s in fig["layout"]["shapes"] if s.get("name") == "pin swap"]
    assert [s["x0"] for s in swaps] == [40] and swaps[0]["line"]["color"] == V.PIN_COLORS[0]
    assert any("adam" in a["text"] for a in fig["layout"]["annotations"])
    loss = V.loss_figure(live, [pin, same])
    pins = [t for t in loss["data"] if t["name"].startswith("pinned: ")]
    assert loss["data"][0]["name"] == "train loss (batch)"                  # live first, pins drawn on top
    idx = [i for i, t in enumerate(loss["data"]) if t["name"].startswith("pinned: ")]
    assert idx == [1, 2]
    assert pins[1]["line"]["dash"] == "dash" and "markers" in pins[1]["mode"]
    assert pins[0]["marker"]["symbol"] != pins[1]["marker"]["symbol"]
    assert pins[1]["line"]["color"] != loss["data"][0]["line"]["color"]
    for f in (fig, loss, V.norms_figure(live, [pin])):
        for t in f["data"]:
            assert _plain(t["name"]), t["name"]
    assert [s["x0"] for s in loss["layout"]["shapes"] if s.get("name") == "pin swap"] == [40]


def test_dashboard_pin_carries_its_own_threshold(tmp_path):
    d = Dashboard(problem="digits-mlp", optimizer="gd", results_dir=tmp_path)
    for k in list(d.probe_checks):
        d.probe_checks[k].value = k == "sharpness"
    d.probe_forms["sharpness"].widgets["every"].value = "5"
    d.problem_form.widgets["n_train"].value = "128"
    d.hparam_form.widgets["lr"].value = "0.1"
    d.run_form.widgets["steps"].value = "11"
    drive(d) if d.start() else pytest.fail(str(d.error.object))
    d.pin()
    d.hparam_form.widgets["lr"].value = "0.05"
    drive(d) if d.start() else pytest.fail(str(d.error.object))
    fig = d.panes["sharpness"].object
    live = [t for t in fig["data"] if t["name"] == "2/lr"]
    pinned = [t for t in fig["data"] if t["name"].startswith("pinned: threshold")]
    assert np.allclose(live[0]["y"], 40.0) and np.allclose(pinned[0]["y"], 20.0)


# -- 5. unbounded losses: a symmetric-log axis --------------------------------------------------------------------
def test_saddle_race_blowup_goes_on_a_symmetric_log_axis():
    runs = []
    for opt, hp in PRESETS["saddle escape"]["race"]:
        r = wb.Run(wb.problems.make("saddle", x0=-1.5, y0=0.001), optimizer=opt, steps=150, progress=False,
                   device="cpu", **hp)
        r.run()
        runs.append(V.snapshot_run(r))
    assert min(np.nanmin(s["loss"]) for s in runs) < -1e20             # the heavy ball runs off to ~-1.5e29
    fig = V.loss_figure(runs[2], runs[:2] + runs[3:])
    ys = np.concatenate([np.asarray(t["y"], dtype=float) for t in fig["data"]])
    assert "symmetric log" in fig["layout"]["yaxis"]["title"]["text"]
    assert np.nanmax(np.abs(ys)) < 31                                   # log10(1.5e29) ≈ 29.2
    live = np.asarray(fig["data"][0]["y"], dtype=float)
    np.testing.assert_allclose(live, V.symlog(runs[2]["loss"][:len(live)]), rtol=1e-12)
    # the other curves keep their shape: the live (Adam) run spans a visible part of the axis
    assert np.nanmax(live) - np.nanmin(live) > 0.05 * (np.nanmax(ys) - np.nanmin(ys))
    tt = fig["layout"]["yaxis"]["ticktext"]
    assert "0" in tt and any(t.startswith("−10<sup>") for t in tt)
    tv = fig["layout"]["yaxis"]["tickvals"]
    assert tv == sorted(tv) and len(tv) == len(tt) <= 15
    # a loss that only crosses zero stays linear; a positive one stays log
    assert not V.needs_symlog(np.linspace(2, -3, 50))
    assert fig["layout"]["yaxis"]["type"] == "linear"


def test_symlog_is_monotone_and_odd():
    y = np.array([-1e29, -5.0, -1e-3, 0.0, 1e-3, 5.0, 1e10])
    t = V.symlog(y)
    assert (np.diff(t) > 0).all() and t[3] == 0 and np.allclose(V.symlog(-y), -t)


# -- 6. log ticks, the update norm's own axis, plane start/end --------------------------------------------------
@pytest.mark.parametrize("lo,hi", [(1e-9, 10.0), (0.02, 0.09), (3.0, 7.0), (1e-40, 1e5)])
def test_log_ticks_are_powers_of_ten_without_bare_digits_or_si(lo, hi):
    t = V.log_ticks(np.geomspace(lo, hi, 50))
    assert t["exponentformat"] == "power" and t["tickmode"] == "array"
    assert 2 <= len(t["tickvals"]) <= 12
    for v, s in zip(t["tickvals"], t["ticktext"]):
        assert re.fullmatch(r"([25]×)?10<sup>−?\d+</sup>", s), s
        k = int(s.split("<sup>")[1].split("<")[0].replace("−", "-"))
        m = int(s[0]) if "×" in s else 1
        assert v == pytest.approx(m * 10.0 ** k)
        assert lo / 10 <= v <= hi * 10


def test_views_log_axes_use_those_ticks_and_update_norm_has_its_own_axis():
    live = _snap("gd", 0.1)
    loss = V.loss_figure(live)
    assert loss["layout"]["yaxis"]["type"] == "log" and loss["layout"]["yaxis"]["exponentformat"] == "power"
    assert all("<sup>" in s for s in loss["layout"]["yaxis"]["ticktext"])
    norms = V.norms_figure(live, [live])
    upd = [t for t in norms["data"] if "Δθ" in t["name"]]
    assert len(upd) == 2 and all(t.get("yaxis") == "y2" for t in upd)
    assert all(t.get("yaxis") is None for t in norms["data"] if t not in upd)
    assert norms["layout"]["yaxis2"]["overlaying"] == "y"
    assert norms["layout"]["yaxis2"]["type"] == "log" and "ticktext" in norms["layout"]["yaxis2"]
    for f in (loss, norms, V.sharpness_figure(live), V.accuracy_figure({"probes": {"train_accuracy": (
            np.arange(3.0), np.ones(3))}})):
        for ax in ("xaxis", "yaxis", "yaxis2"):
            if ax in f["layout"]:
                assert f["layout"][ax]["exponentformat"] == "power", ax


def test_plane_view_marks_start_and_end():
    xy = np.c_[np.linspace(-1, 2, 30), np.linspace(0.5, -0.5, 30) ** 2]
    fig = V.plane_figure(None, [("pinned", xy[::-1] * 0.5), ("adam (this run)", xy)])
    se = [t for t in fig["data"] if t["name"] == "start / end"]
    assert len(se) == 1 and se[0]["text"] == ["start", "end"] and "text" in se[0]["mode"]
    assert (se[0]["x"], se[0]["y"]) == ([xy[0, 0], xy[-1, 0]], [xy[0, 1], xy[-1, 1]])
