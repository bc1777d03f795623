"""The Dashboard driven from Python (no server, no browser): start / tick / pause / step / stop / reset, hot swaps,
inline errors, presets, pins, export/load and file-name safety, and the notebook FigureWidget views."""
import math
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import workbench as wb
from widgets import Dashboard, LiveLoss, LiveMetrics, LiveSharpness, live_callback
from widgets.dashboard import PROBES, make_probe
from widgets.files import list_records, safe_path
from widgets.presets import PRESETS


def drive(d, until=None, timeout=120.0, after_done=False):
    """tick() until the run is done (or ``until()`` holds); returns the run."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        d.tick()
        if (until is not None and until()) or (until is None and d.run is not None and d.run.done
                                               and d._final_done):
            return d.run
        if until is not None and not after_done and d.run is not None and d.run.done and d._final_done \
                and not until():
            d.tick()
            if not until():
                raise AssertionError(f"the run ended ({d.run.status}) before the condition held")
        time.sleep(0.02)
    raise AssertionError("dashboard did not get there in time")


def setv(form, name, value):
    form.widgets[name].value = value


def trace(fig, name):
    return next(t for t in fig["data"] if t.get("name") == name)


@pytest.fixture
def dash(tmp_path):
    d = Dashboard(results_dir=tmp_path / "results")
    yield d
    d.stop()
    if d.run is not None:
        d.run.wait(30)


def test_run_fills_loss_and_path_views(dash):
    setv(dash.hparam_form, "lr", "0.01")
    setv(dash.run_form, "steps", "200")
    run = dash.start()
    assert run is not None and dash.error.visible is False
    drive(dash)
    assert run.status == "finished"
    loss = dash.loss_pane.object["data"][0]
    assert len(loss["x"]) == 200
    np.testing.assert_allclose(np.asarray(loss["y"], dtype=float), run.record.loss.values)
    path = dash.path_pane.object["data"][-1]
    traj = run.record.trajectory.values
    np.testing.assert_allclose(path["x"], traj[:, 0], rtol=1e-6)
    assert "finished" in dash.status.object and "200 / 200" in dash.status.object
    assert dash.first_point_latency is not None
    assert dash.run_button.disabled is False and dash.stop_button.disabled is True


def test_stop_is_prompt_and_reset_clears(dash):
    setv(dash.run_form, "steps", "1000000")
    setv(dash.hparam_form, "lr", "1e-4")
    run = dash.start()
    drive(dash, until=lambda: run.n > 20)
    t0 = time.perf_counter()
    dash.stop()
    assert run.wait(30)
    took = time.perf_counter() - t0
    print(f"stop took {took * 1000:.1f} ms")
    assert run.status == "stopped"
    n = run.n
    time.sleep(0.3)
    assert run.n == n
    drive(dash)
    assert "stopped" in dash.status.object
    dash.reset()
    assert dash.run is None and len(dash.loss_pane.object["data"][0]["x"]) == 0
    assert all(not p.visible for k, p in dash.panes.items() if k not in ("loss", "path"))


def test_pause_and_step_advance_exactly(dash):
    setv(dash.run_form, "steps", "100")
    run = dash.step()                            # starts a paused run and does its first update
    drive(dash, until=lambda: dash.run.waiting)
    assert run.n == 1
    time.sleep(0.3)
    assert run.n == 1 and not run.done
    dash.tick()
    assert "paused" in dash.status.object
    dash.step()
    drive(dash, until=lambda: dash.run.waiting and run.n == 2)
    time.sleep(0.2)
    assert run.n == 2
    # a hot swap while paused applies before the next update
    setv(dash.hparam_form, "lr", "0.02")
    dash.resume()
    drive(dash)
    assert run.status == "finished" and run.n == 100
    assert run.events[0]["step"] == 2 and run.events[0]["hparams"]["lr"] == 0.02
    assert run.record.lr.values[1] == pytest.approx(1e-3) and run.record.lr.values[2] == pytest.approx(0.02)


def test_pause_holds_and_stop_releases(dash):
    setv(dash.run_form, "steps", "100000")
    run = dash.start()
    drive(dash, until=lambda: run.n > 5)
    dash.pause()
    drive(dash, until=lambda: dash.run.waiting)
    n = run.n
    time.sleep(0.3)
    assert run.n == n
    dash.stop()                                  # a paused run must stop too (the gate is released)
    assert run.wait(30) and run.status == "stopped"


def test_optimizer_switch_midrun_is_recorded_and_marked(dash):
    dash.optimizer_select.value = "sgd"
    setv(dash.hparam_form, "lr", "0.0005")
    setv(dash.run_form, "steps", "100000")
    run = dash.start()
    drive(dash, until=lambda: run.n > 30)
    dash.optimizer_select.value = "adam"
    assert dash.hparam_form.widgets["lr"].value == "0.0005"        # the lr carries over into the new form
    drive(dash, until=lambda: run.events and run.n > run.events[0]["step"] + 5)
    dash.stop()
    run.wait(30)
    drive(dash)
    ev = run.events[0]
    assert ev["optimizer"] == "adam"
    rec = run.record
    assert set(rec.optimizer.values[:ev["step"]]) == {"sgd"} and set(rec.optimizer.values[ev["step"]:]) == {"adam"}
    assert wb.records.events(rec)[0]["step"] == ev["step"]
    assert f"step {ev['step']} → adam" in dash.status.object
    shapes = dash.loss_pane.object["layout"]["shapes"]
    assert [s["x0"] for s in shapes if s.get("name") == "swap"] == [ev["step"]]
    swap = trace(dash.path_pane.object, "hot swap")
    np.testing.assert_allclose([swap["x"][0], swap["y"][0]], rec.trajectory.values[ev["step"]], rtol=1e-6)


def test_lr_edit_while_running_hot_swaps(dash):
    dash.optimizer_select.value = "sgd"
    setv(dash.hparam_form, "lr", "0.0001")
    setv(dash.run_form, "steps", "100000")
    run = dash.start()
    drive(dash, until=lambda: run.n > 10)
    setv(dash.hparam_form, "lr", "0.0003")
    drive(dash, until=lambda: run.events and run.n > run.events[0]["step"] + 2)
    assert run.events[0]["changed"] == ["lr"] and run.events[0]["state"] == "kept"
    setv(dash.hparam_form, "lr", "-1")                 # rejected beside the field; the run keeps going
    assert "lr" in dash.hparam_form.errors["lr"].object and dash.hparam_form.errors["lr"].visible
    assert len(run.events) == 1 and not run.done
    dash.stop()


@pytest.mark.parametrize("form,field,text,expect", [
    ("hparam_form", "lr", "-3", "out of range"),
    ("hparam_form", "lr", "abc", "must be a number"),
    ("run_form", "steps", "0", "steps"),
    ("run_form", "batch_size", "2.5", "batch_size"),
])
def test_invalid_values_show_inline_errors(dash, form, field, text, expect):
    setv(getattr(dash, form), field, text)
    assert dash.start() is None and dash.run is None
    err = getattr(dash, form).errors[field]
    assert err.visible and expect in err.object


def test_batch_size_larger_than_data_and_bad_probe_option(dash):
    dash.problem_select.value = "spirals"
    setv(dash.problem_form, "n_train", "100")
    setv(dash.run_form, "batch_size", "500")
    assert dash.start() is None
    assert "batch_size" in dash.run_form.errors["batch_size"].object
    setv(dash.run_form, "batch_size", "")
    dash.probe_checks["sharpness"].value = True
    setv(dash.probe_forms["sharpness"], "every", "0")
    assert dash.start() is None
    assert dash.probe_forms["sharpness"].errors["every"].visible


def test_diverged_run_shows_the_step(dash):
    dash.optimizer_select.value = "gd"
    setv(dash.hparam_form, "lr", "10")
    setv(dash.run_form, "steps", "200")
    run = dash.start()
    drive(dash)
    assert run.status == "diverged"
    assert f"diverged at step {run.diverged_at}" in dash.status.object
    assert dash.error.visible and str(run.diverged_at) in dash.error.object
    assert str(run.diverged_at) in dash.hparam_form.errors["lr"].object
    assert any(s.get("name") == "diverged" and s["x0"] == run.diverged_at
               for s in dash.loss_pane.object["layout"]["shapes"])


@pytest.mark.slow
def test_sharpness_view_shows_the_2_over_lr_line(dash):
    dash.problem_select.value = "digits-mlp"
    for k, v in {"width": "16", "n_train": "200", "loss": "mse"}.items():
        setv(dash.problem_form, k, v)
    dash.optimizer_select.value = "gd"
    setv(dash.hparam_form, "lr", "0.05")
    setv(dash.run_form, "steps", "30")
    dash.probe_checks["sharpness"].value = True
    setv(dash.probe_forms["sharpness"], "every", "10")
    run = dash.start()
    drive(dash)
    fig = dash.panes["sharpness"].object
    assert dash.panes["sharpness"].visible
    thr = trace(fig, "2/lr")
    np.testing.assert_allclose(thr["y"], 2 / 0.05)
    lam = trace(fig, "sharpness λ_max(H)")
    np.testing.assert_allclose(np.asarray(lam["y"], float), run.record.sharpness.values, rtol=1e-9)
    assert dash.panes["accuracy"].visible and not dash.panes["norms"].visible   # Eval on by default, Norms off
    assert "test accuracy" in [t["name"] for t in dash.panes["accuracy"].object["data"]]


def test_network_views_and_pca_plane(dash):
    dash.problem_select.value = "gaussian-mixture"
    for k, v in {"width": "8", "n_train": "128", "n_test": "64"}.items():
        setv(dash.problem_form, k, v)
    dash.optimizer_select.value = "gd"
    setv(dash.hparam_form, "lr", "0.5")
    setv(dash.run_form, "steps", "60")
    for name, every in {"subspace": "10", "spectrum": "30", "trace": "30", "trajectory": "5"}.items():
        dash.probe_checks[name].value = True
        setv(dash.probe_forms[name], "every", every)
    setv(dash.probe_forms["subspace"], "k", "4")
    run = dash.start()
    drive(dash)
    drive(dash, until=lambda: dash._idle(), after_done=True)
    for view in ("subspace", "spectrum", "eigs", "path"):
        assert dash.panes[view].visible, view
    frac = trace(dash.panes["subspace"].object, "‖Vᵀg‖²/‖g‖² (full batch)")
    np.testing.assert_allclose(np.asarray(frac["y"], float), run.record.subspace_fraction.values, rtol=1e-9)
    plane = dash.path_pane.object
    assert plane["data"][0]["type"] == "heatmap" and "PCA plane" in plane["layout"]["title"]["text"]
    path = plane["data"][-1]
    assert len(path["x"]) == run.record.sizes["trajectory_step"]
    # the run ends at the PCA center (center = final point)
    assert abs(path["x"][-1]) < 1e-4 and abs(path["y"][-1]) < 1e-4


def test_pins_overlay_and_race(dash):
    setv(dash.run_form, "steps", "50")
    dash.start()
    drive(dash)
    dash.pin()
    assert len(dash.pins) == 1
    names = [t["name"] for t in dash.loss_pane.object["data"]]
    assert any(n.startswith("pinned: ") for n in names)
    dash.reset()
    assert any(t["name"].startswith("pinned: ") for t in dash.loss_pane.object["data"])    # pins survive Reset
    dash.clear_pins()
    assert len(dash.loss_pane.object["data"]) == 1
    p = dash.apply_preset("Rosenbrock race")
    drive(dash, until=lambda: len(dash.pins) == len(p["race"]), after_done=True)
    assert [pin["optimizer"] for pin in dash.pins] == [o for o, _ in p["race"]]
    pinned_paths = [t for t in dash.path_pane.object["data"] if t.get("name", "").startswith("pinned: ")]
    assert len(pinned_paths) == len(p["race"])


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_fill_valid_controls(dash, name):
    p = PRESETS[name]
    dash.apply_preset(name, race=False)
    assert dash.problem_select.value == p["problem"] and dash.optimizer_select.value == p["optimizer"]
    prob, run = dash._collect()
    assert run.hparams["lr"] == p["hparams"]["lr"] and run.steps == p["run"]["steps"]
    assert run.batch_size == p["run"]["batch_size"]
    assert set(run.probe_names) - {"trajectory"} == set(p["probes"])
    for k, v in p["problem_options"].items():
        assert prob.options[k] == v
    if "subspace" in p["probes"]:
        assert run._slots[run.probe_names.index("subspace")].probe.k == p["probes"]["subspace"]["k"]


def test_export_load_round_trip(dash, tmp_path):
    dash.optimizer_select.value = "sgd"
    setv(dash.hparam_form, "lr", "0.0001")
    setv(dash.run_form, "steps", "1000000")           # long enough that the swap lands before the end
    run = dash.start()
    drive(dash, until=lambda: run.n > 10)
    dash.optimizer_select.value = "adam"
    drive(dash, until=lambda: run.events and run.n > run.events[0]["step"] + 2)
    dash.stop()
    drive(dash)
    nc, html = dash.export("my_run-1")
    assert nc == (tmp_path / "results" / "my_run-1.nc").resolve() and nc.is_file() and html.is_file()
    assert "plotly" in html.read_text() and "my_run-1" in dash.load_select.options
    ds = wb.load(nc)
    np.testing.assert_array_equal(ds.loss.values, run.record.loss.values)
    assert wb.records.events(ds) == [{**e, "hparams": {k: v for k, v in e["hparams"].items()}}
                                     for e in run.events]
    dash.reset()
    assert dash.load("my_run-1") is not None
    assert "Viewing saved record" in dash.status.object and "→ adam" in dash.status.object
    np.testing.assert_allclose(np.asarray(dash.loss_pane.object["data"][0]["y"], float), ds.loss.values)
    assert dash.path_pane.visible
    dash.pin()
    assert dash.pins[-1]["label"].endswith("(my_run-1)")


@pytest.mark.slow
def test_png_export_with_kaleido(dash, tmp_path):
    pytest.importorskip("kaleido")
    setv(dash.run_form, "steps", "20")
    dash.start()
    drive(dash)
    nc, _ = dash.export("pngs", png=True)
    dash.tasks.join("png", 300)
    drive(dash, until=lambda: dash._idle(), after_done=True)
    dash.tick()
    assert not dash.file_error.visible, dash.file_error.object
    for view in dash.figures():
        png = nc.parent / f"pngs_{view}.png"
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PNG written" in dash.file_status.object


@pytest.mark.parametrize("bad", ["../evil", "../../etc/passwd", "/etc/passwd", "a/b", ".hidden", "..", " ",
                                 "x" * 200, "a\\b", "name with space", "%2e%2e"])
def test_path_traversal_rejected(dash, tmp_path, bad):
    setv(dash.run_form, "steps", "5")
    dash.start()
    drive(dash)
    assert dash.export(bad) is None
    assert dash.file_error.visible and "not allowed" in dash.file_error.object
    assert dash.load(bad) is None and dash.file_error.visible
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and "results" not in p.parts]
    assert outside == []


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_safe_path_never_leaves_the_folder(tmp_path_factory, name):
    root = tmp_path_factory.getbasetemp() / "safe"
    try:
        p = safe_path(root, name, ".nc")
    except ValueError as exc:
        assert "not allowed" in str(exc) or "must be" in str(exc)
        return
    assert p.parent == root.resolve() and p.suffix == ".nc"


def test_list_records_only_plain_nc(tmp_path):
    (tmp_path / "a.nc").write_bytes(b"")
    (tmp_path / "b.html").write_text("")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.nc").write_bytes(b"")
    assert list_records(tmp_path) == ["a"] and list_records(tmp_path / "missing") == []


def test_two_dashboards_share_nothing(tmp_path):
    a, b = Dashboard(results_dir=tmp_path), Dashboard(results_dir=tmp_path)
    a.optimizer_select.value = "sgd"
    b.optimizer_select.value = "lion"
    for d in (a, b):
        setv(d.run_form, "steps", "30")
    ra, rb = a.start(), b.start()
    drive(a)
    drive(b)
    assert ra is not rb and ra.optimizer_name == "sgd" and rb.optimizer_name == "lion"
    a.pin()
    assert b.pins == [] and "lion" in b.status.object and "sgd" not in b.status.object
    assert a.hparam_form is not b.hparam_form and a.probe_forms["eval"] is not b.probe_forms["eval"]


def test_every_probe_choice_builds(tmp_path):
    prob = wb.problems.make("gaussian-mixture", width=8, n_train=128, n_test=64)
    for name, (_, specs) in PROBES.items():
        probe = make_probe(name, {p.name: p.default for p in specs}, prob)
        assert isinstance(probe, wb.probes.Probe)
    with pytest.raises(ValueError, match="unknown probe"):
        make_probe("nope", {"every": 1}, prob)


def test_crash_is_reported_not_raised(dash, monkeypatch):
    # a probe misconfigured for the problem is refused when the run is built: an inline error, no run (issue 16)
    dash.probe_checks["sharpness"].value = True
    setv(dash.probe_forms["sharpness"], "k", "3")          # more eigenvalues than the 2 parameters
    setv(dash.run_form, "steps", "3")
    assert dash.start() is None and dash.run is None
    assert dash.error.visible and "Sharpness.k" in dash.error.object
    assert dash.run_button.disabled is False
    # a failure during the run is reported as a crash, with what was recorded kept
    setv(dash.probe_forms["sharpness"], "k", "1")
    from workbench.probes import Sharpness

    def broken(self, ctx):
        raise RuntimeError("simulated failure inside a probe")
    monkeypatch.setattr(Sharpness, "measure", broken)
    run = dash.start()
    drive(dash)
    assert run.status == "crashed"
    assert dash.error.visible and "crashed" in dash.error.object and "simulated failure" in dash.error.object
    assert dash.run_button.disabled is False
    monkeypatch.undo()
    assert dash.start() is not None                         # the session goes on
    drive(dash)
    assert dash.run.status == "finished"


# -- notebook views ----------------------------------------------------------------------------------------
def test_live_loss_figure_widget_follows_a_run():
    prob = wb.problems.make("rosenbrock")
    live = LiveLoss(every_s=0.0)
    run = wb.train(prob, "adam", lr=0.01, steps=60, callback=live, progress=False)
    live.finish()
    np.testing.assert_allclose(live.figure.data[0].y, run.record.loss.values)
    assert list(live.figure.data[0].x) == list(range(60))
    assert live.figure.layout.yaxis.type == "log"


def test_live_sharpness_and_callback_on_any_figure():
    import plotly.graph_objects as go

    prob = wb.problems.make("digits-mlp", width=8, n_train=100)
    sh = LiveSharpness(every_s=0.0)
    fig = go.FigureWidget()
    cb = live_callback(fig, ["loss", "grad_norm"], every_s=1e9)      # never redraws until flush()
    run = wb.train(prob, "gd", lr=0.1, steps=21, probes=[wb.probes.Sharpness(every=10)],
                   callback=lambda row: (sh(row), cb(row)) and None, progress=False)
    sh.finish()
    assert list(sh.figure.data[0].x) == [0, 10, 20]
    np.testing.assert_allclose(sh.figure.data[0].y, run.record.sharpness.values[:3], rtol=1e-9)
    np.testing.assert_allclose(sh.figure.data[1].y, 2 / 0.1)
    assert len(fig.data[0].x) == 0
    cb.flush()
    np.testing.assert_allclose(fig.data[1].y, run.record.grad_norm.values)
    with pytest.raises(ValueError, match="keys"):
        live_callback(fig, [])
    with pytest.raises(ValueError, match="every_s"):
        LiveMetrics(["loss"], every_s=-1)
