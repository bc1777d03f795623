"""The dashboard's Sweep and Runs views without a browser: a synchronous sweep launched from the Train controls fills
the phase diagram through the periodic callback, Stop keeps the finished cells, bad ranges are inline errors naming
the field, a cell opens in the Train view; the Runs view filters, overlays and deletes only after confirmation."""
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import workbench as wb
from workbench.outcomes import summarize
from workbench.sweep import load_sweep
from widgets import Dashboard
from widgets.safe import text as escape
from widgets.sweep_view import MAX_CELLS, MAX_POINTS, axis_values

pytestmark = pytest.mark.usefixtures("one_thread")     # the in-process sweep sets one torch thread too


def sweep_dash(tmp_path, steps=20, **kw):
    d = Dashboard(problem="quadratic", optimizer="sgd", results_dir=tmp_path / "results", **kw)
    d.run_form.widgets["steps"].value = str(steps)
    sv = d.sweep_view
    x, y = sv.axes["x"], sv.axes["y"]
    x["field"].value = "lr"
    x["min"].value, x["max"].value, x["n"].value, x["scale"].value = "0.01", "0.1", "3", "log"
    y["field"].value = "momentum"
    y["min"].value, y["max"].value, y["n"].value, y["scale"].value = "0", "0.9", "3", "linear"
    sv.name.value = "grid"
    return d, sv


def filled(sv):
    z = np.asarray(sv.plot.object.data[0].z, dtype=float)
    return int(np.isfinite(z).sum())


def test_launch_fills_phase_diagram_through_the_periodic_callback(tmp_path):
    d, sv = sweep_dash(tmp_path)
    th = sv.launch()
    assert th is not None, sv.error.object
    assert sv.plot.visible and filled(sv) == 0 and sv.progress_pane.object.startswith("0 of 9 cells")
    th.join(120)
    assert not th.is_alive()
    # the thread only queued its results: nothing reached the view before the periodic callback ran
    assert filled(sv) == 0 and sv.cells == {}
    sv.tick()
    assert filled(sv) == 9
    assert sv.progress().startswith("9 of 9 cells") and "done" in sv.progress()
    assert "9 of 9 cells" in sv.progress_pane.object
    assert sv.launch_button.disabled is False and sv.stop_button.disabled is True
    # the cells are the ones on disk: the live outcomes equal those of the sweep read back from its folder
    directory = tmp_path / "results" / "sweeps" / "grid"
    assert len(list((directory / "cells").glob("cell-*.nc"))) == 9
    rec = load_sweep(directory)
    assert rec.attrs["cells_missing"] == 0
    want = summarize(rec)["final_loss"].transpose("lr", "momentum").values
    got = sv.record()["final_loss"].transpose("lr", "momentum").values
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert list(rec["lr"].values) == pytest.approx([0.01, 0.0316228, 0.1], rel=1e-5)
    assert list(rec["momentum"].values) == pytest.approx([0.0, 0.45, 0.9])
    # the swept values reached the runs (a larger lr gets further down this convex quadratic in 20 steps)
    fl = rec["loss"].isel(step=-1).sel(momentum=0.0).values
    assert fl[0] > fl[1] > fl[2]
    # the grid used the Train controls: optimizer, steps
    cfg = wb.records.config(wb.load(directory / "cells" / "cell-00000.nc"))
    assert cfg["optimizer"] == "sgd" and rec.sizes["step"] == 20


def test_callback_fills_cells_one_by_one_and_stop_keeps_finished_cells(tmp_path):
    d, sv = sweep_dash(tmp_path, steps=400)
    seen = []
    th = sv.launch()
    assert th is not None, sv.error.object
    while th.is_alive() and len(sv.cells) < 2:
        sv.tick()
        seen.append(len(sv.cells))
        th.join(0.02)
    sv.stop()
    assert "stopping" in sv.progress_pane.object
    th.join(120)
    sv.tick()
    assert seen == sorted(seen)                       # the count only grows
    n = len(sv.cells)
    assert 2 <= n < 9, n                              # stopped after the cell in flight, before the end
    assert sv.state == "stopped" and "stopped" in sv.progress()
    assert sv.progress().startswith(f"{n} of 9 cells")
    assert filled(sv) == n
    rec = load_sweep(tmp_path / "results" / "sweeps" / "grid")
    assert rec.attrs["cells_missing"] == 9 - n        # every finished cell stayed on disk, nothing else
    assert sv.launch_button.disabled is False


def test_open_cell_shows_that_run_in_the_train_view(tmp_path):
    d, sv = sweep_dash(tmp_path)
    sv.launch()
    sv.wait(120)
    lr, mom = sv.grid["lr"][2], sv.grid["momentum"][1]
    # the coordinates exactly as a click on the heatmap gives them back (customdata JSON)
    fig = sv.plot.object
    custom = fig.data[0].customdata[1][2]
    from widgets.compare import cell_from_click
    coords = cell_from_click({"points": [{"customdata": custom}]})
    assert coords == {"lr": pytest.approx(lr), "momentum": pytest.approx(mom)}
    d.tabs.active = 1
    ds = sv.open_cell(coords)
    assert ds is not None
    want = wb.load(tmp_path / "results" / "sweeps" / "grid" / "cells" / "cell-00007.nc")     # index 2 * 3 + 1
    assert ds.identical(want)
    assert d.loaded is ds and d.tabs.active == 0
    y = np.asarray(d.panes["loss"].object["data"][0]["y"], dtype=float)
    np.testing.assert_allclose(y, want["loss"].values)
    assert "cell-00007" in d.status.object and "Opened" in sv.open_status.object
    assert sv.open_cell({"lr": 123.0, "momentum": 0.0}) is None and "no finished cell" in sv.open_status.object
    # what a served Panel sends for a heatmap click: x and y, no customdata (its point number is [row, col])
    sv.plot.click_data = {"points": [{"curveNumber": 0, "x": sv.grid["lr"][0], "y": sv.grid["momentum"][2],
                                      "z": -1.0}]}
    want = wb.load(tmp_path / "results" / "sweeps" / "grid" / "cells" / "cell-00002.nc")
    assert d.loaded.identical(want) and "cell-00002" in d.status.object
    assert sv.open_click({"points": []}) is None and d.loaded.identical(want)


@pytest.mark.parametrize("field, value, where, words", [
    ("x.min", "abc", "x", ["x (lr)", "min must be a number"]),
    ("x.min", "-1", "x", ["x (lr)", "min=-1", "log scale needs min > 0"]),
    ("x.max", "0.001", "x", ["x (lr)", "min=0.01", "at most max=0.001"]),
    ("x.max", "1000", "x", ["x (lr)", "lr", "1000"]),           # beyond the schema's lr range
    ("x.n", "0", "x", ["x (lr)", "points=0", f"[1, {MAX_POINTS}]"]),
    ("y.min", "-0.5", "y", ["y (momentum)", "momentum"]),     # below the schema's range
    ("y.field", "lr", "y", ["y (lr)", "other than x"]),
    ("seeds", "0", "seeds", ["seeds='0'", "[1, 20]"]),
    ("workers", "-2", "workers", ["workers='-2'"]),
    ("name", "../evil", "name", ["name='../evil'", "not allowed"]),
    ("name", "/etc/x", "name", ["name='/etc/x'", "not allowed"]),
])
def test_bad_grid_is_an_inline_error_naming_the_field(tmp_path, field, value, where, words):
    d, sv = sweep_dash(tmp_path)
    if "." in field:
        ax, key = field.split(".")
        sv.axes[ax][key].value = value
        if key == "field":      # a new field is pre-filled: keep the range valid, so only the field is wrong
            sv.axes[ax]["min"].value, sv.axes[ax]["max"].value = "0.01", "0.1"
        pane = sv.axes[ax]["error"]
    else:
        getattr(sv, field).value = value
        pane = getattr(sv, f"{field}_error")
    assert sv.launch() is None
    assert pane.visible, (field, sv.error.object)
    for w in words:
        assert escape(w) in pane.object, (w, pane.object)
    assert sv.error.visible and sv.thread is None
    assert not (tmp_path / "results" / "sweeps").exists() or not any((tmp_path / "results" / "sweeps").iterdir())


def test_grid_too_large_or_too_long_is_refused(tmp_path):
    d, sv = sweep_dash(tmp_path)
    sv.axes["x"]["n"].value = "20"
    sv.axes["y"]["n"].value = "20"
    sv.seeds.value = "2"
    assert sv.launch() is None
    assert "800 cells" in sv.error.object and f"at most {MAX_CELLS}" in sv.error.object
    sv.seeds.value = "1"
    d.run_form.widgets["steps"].value = "100000"         # 400 cells x 100k steps
    assert sv.launch() is None
    assert sv.error.object.startswith("steps=100,000 is out of range")


def test_one_cell_over_the_memory_cap_is_refused(tmp_path):
    d, sv = sweep_dash(tmp_path, steps=5000, max_memory_mb=1)
    assert sv.launch() is None
    assert sv.error.object.startswith("steps=5,000 is out of range") and "1 MB" in sv.error.object
    assert sv.thread is None


def test_errors_are_escaped_and_existing_sweeps_are_not_overwritten(tmp_path):
    d, sv = sweep_dash(tmp_path)
    sv.name.value = "<b>x</b>"
    assert sv.launch() is None
    assert "&lt;b&gt;" in sv.name_error.object and "<b>" not in sv.name_error.object
    sv.name.value = "grid"
    assert sv.launch() is not None
    sv.wait(120)
    assert sv.launch() is None
    assert "already exists" in sv.name_error.object
    assert len(list((tmp_path / "results" / "sweeps" / "grid" / "cells").glob("*.nc"))) == 9


def test_fields_follow_the_optimizer_and_problem(tmp_path):
    d = Dashboard(problem="gaussian-mixture", optimizer="adam", results_dir=tmp_path / "results")
    sv = d.sweep_view
    opts = set(sv.axes["x"]["field"].options.values())
    assert {"lr", "batch_size", "problem.width", "problem.n_train"} <= opts
    assert sv.axes["x"]["field"].value == "lr" and sv.axes["y"]["field"].value == "batch_size"
    d.optimizer_select.value = "sgd"
    assert "momentum" in sv.axes["x"]["field"].options.values()
    d.problem_select.value = "rosenbrock"
    assert "batch_size" not in sv.axes["x"]["field"].options.values()      # no data to batch


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lo=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5)),
       hi=st.floats(-1e6, 1e6), n=st.one_of(st.integers(-3, 60), st.text(max_size=3)),
       scale=st.sampled_from(["log", "linear", "cubic"]), integer=st.booleans())
def test_axis_values_either_error_naming_the_field_or_a_valid_range(lo, hi, n, scale, integer):
    from workbench.params import Param
    spec = Param("width", 8, kind="int", low=1, high=10**6) if integer else \
        Param("lr", 0.1, kind="float", low=0.0, high=100.0, low_inclusive=False)
    try:
        vals = axis_values(spec.name, lo, hi, n, scale, spec=spec, label="x")
    except ValueError as exc:
        assert str(exc).startswith(f"x ({spec.name}):")
        return
    assert 1 <= len(vals) <= MAX_POINTS and len(vals) == int(float(n))
    assert vals == sorted(vals) and len(set(vals)) == len(vals)
    assert all(spec.low <= v <= spec.high for v in vals)
    assert math.isclose(vals[0], float(lo), rel_tol=1e-5, abs_tol=0.5 if integer else 1e-9)


# -- the Runs view ----------------------------------------------------------------------------------------------
def saved_runs(results):
    results.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, problem, opt, lr, steps in [("q_sgd", "quadratic", "sgd", 0.05, 15), ("q_adam", "quadratic", "adam", 0.1, 25),
                                          ("r_sgd", "rosenbrock", "sgd", 1e-3, 10), ("q_div", "quadratic", "gd", 0.5, 40)]:
        run = wb.train(wb.problems.make(problem), optimizer=opt, lr=lr, steps=steps, device="cpu", progress=False)
        wb.save(run.record, results / f"{name}.nc")
        out[name] = run.record
    return out


def test_runs_view_filters_overlays_and_deletes_only_after_confirmation(tmp_path):
    results = tmp_path / "results"
    recs = saved_runs(results)
    assert recs["q_div"].attrs["status"] == "diverged"
    outside = tmp_path / "outside.nc"
    wb.save(recs["q_sgd"], outside)
    os.symlink(outside, results / "link.nc")
    d = Dashboard(problem="quadratic", optimizer="sgd", results_dir=results)
    rv = d.runs_view
    d.tabs.active = 2                                     # opening the tab re-reads the folder
    assert {r["file"] for r in rv.rows} == {"q_sgd.nc", "q_adam.nc", "r_sgd.nc", "q_div.nc"}   # no symlink
    rv.problem.value = "quadratic"
    assert {r["file"] for r in rv.rows} == {"q_sgd.nc", "q_adam.nc", "q_div.nc"}
    rv.optimizer.value = "sgd"
    assert [r["file"] for r in rv.rows] == ["q_sgd.nc"]
    rv.optimizer.value = "(any)"
    rv.status_filter.value = "diverged"
    assert [r["file"] for r in rv.rows] == ["q_div.nc"]
    rv.status_filter.value = "(any)"
    rv.problem.value = "(any)"

    # overlay two runs: two traces with their names and their own losses
    assert rv.select(["q_sgd.nc", "q_adam.nc", "../outside.nc"]) == ["q_sgd.nc", "q_adam.nc"]
    fig = rv.plot.object
    assert rv.plot.visible and len(fig.data) == 2
    by_name = {t.name: t for t in fig.data}
    np.testing.assert_allclose(np.asarray(by_name["q_sgd"].y, float), recs["q_sgd"]["loss"].values)
    np.testing.assert_allclose(np.asarray(by_name["q_adam"].y, float), recs["q_adam"]["loss"].values)
    assert len(by_name["q_adam"].x) == 25 and len(by_name["q_sgd"].x) == 15
    assert "grad_norm" in rv.var.options
    rv.var.value = "grad_norm"
    np.testing.assert_allclose(np.asarray(rv.plot.object.data[0].y, float), recs[rv.plot.object.data[0].name]
                               ["grad_norm"].values)
    rv.align.value = "wall_time"
    assert rv.plot.object.layout.xaxis.title.text == "wall time (s)"

    # open one in the Train view
    rv.select(["r_sgd.nc"])
    assert rv.open() is not None and d.tabs.active == 0 and "r_sgd" in d.status.object

    # delete: the first click only asks; changing the selection cancels; a second click on it deletes
    rv.select(["q_sgd.nc", "q_div.nc"])
    assert rv.delete() == [] and (results / "q_sgd.nc").exists() and (results / "q_div.nc").exists()
    assert "Confirm delete (2)" == rv.delete_button.label
    rv.select(["q_sgd.nc"])
    assert rv.delete_button.label == "Delete selected"
    assert rv.delete() == [] and (results / "q_sgd.nc").exists()
    assert rv.delete() == ["q_sgd.nc"]
    assert not (results / "q_sgd.nc").exists() and (results / "q_div.nc").exists()
    assert outside.exists() and (results / "link.nc").is_symlink()
    assert "q_sgd.nc" not in {r["file"] for r in rv.refresh()}
    assert "q_sgd" not in d.load_select.options
