"""The dashboard's Landscape tab without a browser: a 2D function's path and a network's PCA plane, as contours or a
3D surface, replayed with the step slider; for a network the plane is computed next to the run (a worker process of
a ``RunPool``) or in a ``Tasks`` job (a run in a thread), and both feed the tab the same way."""
import numpy as np
import pytest

from widgets import Dashboard
from widgets.pool import RunPool

from test_dashboard import drive, setv


@pytest.fixture(scope="module")
def pool():
    p = RunPool(max_workers=1)
    yield p
    p.shutdown()


@pytest.fixture(params=["local", "pool"])
def dash(request, tmp_path):
    p = request.getfixturevalue("pool") if request.param == "pool" else None
    d = Dashboard(results_dir=tmp_path / "results", pool=p)
    yield d
    d.stop()
    if d.run is not None:
        d.run.wait(30)


def names(fig):
    return [t.get("name") for t in fig["data"]]


def test_a_network_run_feeds_the_landscape_tab_contours_3d_and_replay(dash):
    dash.problem_select.value = "gaussian-mixture"
    for k, v in {"width": "8", "n_train": "128", "n_test": "64"}.items():
        setv(dash.problem_form, k, v)
    dash.optimizer_select.value = "gd"
    setv(dash.hparam_form, "lr", "0.5")
    setv(dash.run_form, "steps", "60")
    dash.probe_checks["trajectory"].value = True
    setv(dash.probe_forms["trajectory"], "every", "5")
    dash.start()
    drive(dash)
    # the final plane: with a pool, a mid-run plane may be shown first and the child sends the final one after
    # the record (plane_pending until then)
    drive(dash, until=lambda: dash._plane is not None and dash.panes["landscape"].visible
          and not getattr(dash.run, "plane_pending", False) and getattr(dash.run, "plane_result", None) is None,
          timeout=60, after_done=True)
    plane = dash._plane
    assert sorted(plane) == ["explained", "figure", "label", "steps", "surface", "xy"]
    n = plane["xy"].shape[0]
    assert n == 13 and list(plane["steps"]) == list(range(0, 61, 5))
    fig = dash.panes["landscape"].object
    assert fig["data"][0]["type"] == "heatmap"
    assert dash.replay_slider.end == n - 1 and dash.replay_slider.value == n - 1 and not dash.replay_slider.disabled
    dash.landscape_mode.value = "3D surface"
    fig3 = dash.panes["landscape"].object
    assert fig3["data"][0]["type"] == "surface"
    surf = np.asarray(fig3["data"][0]["z"], dtype=float)
    assert surf.shape == plane["surface"].shape and np.isfinite(surf).all()
    dash.replay_slider.value = 3
    fig3 = dash.panes["landscape"].object
    assert fig3["data"][-1]["name"] == "step 15"
    live = next(t for t in fig3["data"] if t.get("type") == "scatter3d" and t.get("mode", "").startswith("lines"))
    assert len(live["x"]) == 4
    dash.landscape_mode.value = "contours"
    assert dash.panes["landscape"].object["data"][-1]["name"] == "step 15"


def test_a_function_run_replays_on_contours_and_in_3d(dash):
    setv(dash.hparam_form, "lr", "0.01")
    setv(dash.run_form, "steps", "40")
    dash.start()
    drive(dash)
    dash.tick()
    n = len(dash._snap["path"])
    assert n == 41 and dash.replay_slider.end == n - 1
    dash.replay_slider.value = 10
    fig = dash.panes["landscape"].object
    assert fig["data"][-1]["name"] == "step 10"
    dash.landscape_mode.value = "3D surface"
    fig3 = dash.panes["landscape"].object
    assert fig3["data"][0]["type"] == "surface" and fig3["data"][-1]["name"] == "step 10"
