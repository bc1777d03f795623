"""The space views (widgets/views_space.py): the 3D surface of a 2D test function with the path lying on it (exact
heights), the PCA plane as a 3D surface (bilinear heights), replay (``upto``), the 2D views unchanged when not
replaying, and escaped text. Pure record->figure functions: no server, no browser."""
import json

import numpy as np
import plotly.graph_objects as go
import pytest
import xarray as xr

import workbench as wb
from widgets import views as V
from widgets.plot_style import MAX_POINTS, PIN_COLORS, PIN_PREFIX, PIN_SYMBOLS, _layout
from widgets.safe import plot_text

EVIL = "<img src=x onerror=alert(1)>"


# -- the previous code (widgets/views.py at ddfc921), kept to check upto=None changes nothing ----------------
def old_function_path_figure(background: dict, points, events=(), steps=None, pins=()):
    fig = {"data": list(background["data"]), "layout": dict(background["layout"])}
    for i, pin in enumerate(pins):
        pts = pin.get("path")
        if pts is not None and len(pts):
            fig["data"].append({"type": "scatter", "x": pts[:, 0].copy(), "y": pts[:, 1].copy(),
                                "mode": "lines+markers", "name": plot_text(f"{PIN_PREFIX}{pin['label']}"),
                                "line": {"color": PIN_COLORS[i % len(PIN_COLORS)], "width": 2.5, "dash": "dash"},
                                "marker": {"symbol": PIN_SYMBOLS[i % len(PIN_SYMBOLS)], "size": 8,
                                           "maxdisplayed": 25, "color": PIN_COLORS[i % len(PIN_COLORS)]}})
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    if steps is not None and len(events):
        steps = np.asarray(steps)
        xs, ys, txt = [], [], []
        for ev in events:
            j = np.searchsorted(steps, ev.get("step", 0))
            if j < len(pts):
                xs.append(float(pts[j, 0]))
                ys.append(float(pts[j, 1]))
                txt.append(plot_text(f"step {ev.get('step')}: ↦ {ev.get('optimizer')}"))
        if xs:
            fig["data"].append({"type": "scatter", "x": xs, "y": ys, "mode": "markers", "name": "hot swap",
                                "text": txt, "marker": {"symbol": "diamond", "size": 11, "color": "#ffdc00",
                                                        "line": {"color": "black", "width": 1}}})
    if len(pts) > MAX_POINTS:
        idx = np.unique(np.linspace(0, len(pts) - 1, MAX_POINTS).astype(int))
        pts = pts[idx]
    fig["data"].append({"type": "scatter", "x": pts[:, 0].copy(), "y": pts[:, 1].copy(),
                        "mode": "lines+markers" if len(pts) <= 300 else "lines", "name": "path",
                        "line": {"color": "#ff4136", "width": 2}, "marker": {"size": 4}})
    return fig


def old_function_background(problem, n: int = 100) -> dict:
    import torch
    (x0, x1), (y0, y1) = problem.domain
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    X, Y = np.meshgrid(xs, ys)
    with torch.no_grad():
        Z = problem.function(torch.tensor(np.stack([X, Y], -1), dtype=torch.float64)).numpy()
    zlog = np.log10(Z - Z.min() + 1e-3)
    data = [{"type": "heatmap", "x": xs, "y": ys, "z": zlog, "colorscale": "Viridis",
             "zsmooth": "fast", "colorbar": {"title": {"text": "log10(f − min)"}}, "name": "f", "hoverinfo": "skip"}]
    if problem.minima:
        mx, my = zip(*problem.minima)
        data.append({"type": "scatter", "x": list(mx), "y": list(my), "mode": "markers", "name": "minima",
                     "marker": {"symbol": "star", "size": 14, "color": "white",
                                "line": {"color": "black", "width": 1}}})
    layout = _layout(f"{problem.name}: optimizer path on the exact surface", "y", xtitle="x")
    layout["xaxis"]["range"] = [x0, x1]
    layout["yaxis"]["range"] = [y0, y1]
    return {"data": data, "layout": layout}


def old_plane_figure(surf, paths, explained=None, title="loss on the PCA plane of the trajectory"):
    data = []
    if surf is not None:
        z = np.asarray(surf.values, dtype=float).T
        zpos = z[np.isfinite(z)]
        zl = np.log10(np.clip(z, max(zpos.min(), 1e-12) if zpos.size and zpos.min() > 0 else 1e-12, None)) \
            if zpos.size and zpos.min() > 0 else z
        data.append({"type": "heatmap", "x": np.asarray(surf["alpha"].values, dtype=float),
                     "y": np.asarray(surf["beta"].values, dtype=float),
                     "z": np.asarray(zl, dtype=float), "colorscale": "Viridis", "zsmooth": "best",
                     "colorbar": {"title": {"text": "log10 loss" if zl is not z else "loss"}}, "hoverinfo": "skip",
                     "name": "loss"})
    for i, (label, xy) in enumerate(paths):
        color = "#ff4136" if i == len(paths) - 1 else PIN_COLORS[i % len(PIN_COLORS)]
        data.append({"type": "scatter", "x": xy[:, 0].copy(), "y": xy[:, 1].copy(), "mode": "lines+markers",
                     "name": plot_text(label), "line": {"color": color, "width": 2}, "marker": {"size": 4}})
    if paths and len(paths[-1][1]):
        xy = np.asarray(paths[-1][1], dtype=float)
        data.insert(1 if surf is not None else 0, {"type": "scatter", "x": [float(xy[0, 0]), float(xy[-1, 0])],
                     "y": [float(xy[0, 1]), float(xy[-1, 1])], "mode": "markers+text", "name": "start / end",
                     "text": ["start", "end"], "textposition": ["top center", "bottom center"],
                     "textfont": {"color": "white", "size": 12},
                     "marker": {"symbol": ["circle", "square"], "size": 12, "color": ["#2ca02c", "#d62728"],
                                "line": {"color": "white", "width": 1.5}}})
    ev = "" if not explained else f" (explained variance {', '.join(f'{e:.0%}' for e in explained[:2])})"
    layout = _layout(title + ev, "PC 2", xtitle="PC 1")
    return {"data": data, "layout": layout}


# -- helpers -------------------------------------------------------------------------------------------------
def same(a, b, where="fig"):
    """Deep equality of plain figure dicts (numpy arrays compared exactly, same dtype kind and shape)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        assert isinstance(a, np.ndarray) and isinstance(b, np.ndarray), where
        assert a.shape == b.shape and a.dtype == b.dtype, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b) if isinstance(b, dict) else b)
        for k in a:
            same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
    else:
        assert type(a) is type(b) and (a == b or (a != a and b != b)), (where, a, b)


def trace(fig, name=None, type_=None):
    out = [t for t in fig["data"] if (name is None or t.get("name") == name) and (type_ is None or t["type"] == type_)]
    assert len(out) == 1, [(t["type"], t.get("name")) for t in fig["data"]]
    return out[0]


def rosen(x, y, a=1.0, b=100.0):
    return (a - x) ** 2 + b * (y - x ** 2) ** 2


@pytest.fixture(scope="module")
def rosenbrock():
    prob = wb.problems.make("rosenbrock")
    return prob, V.function_background(prob)


def spiral(n=40):
    t = np.linspace(0, 1, n)
    return np.c_[-1.2 + 2.0 * t + 0.3 * np.sin(7 * t), 1.0 + 0.4 * np.cos(5 * t) * t]


def plane_surf(n=11):
    a, b = np.linspace(-1.0, 1.0, n), np.linspace(-0.5, 1.5, n + 2)
    A, B = np.meshgrid(a, b, indexing="ij")
    loss = 0.3 + A ** 2 + 2.0 * (B - 0.5) ** 2 + 0.1 * A * B
    return xr.DataArray(loss, dims=("alpha", "beta"), coords={"alpha": a, "beta": b})


# -- 3D surface of a test function ---------------------------------------------------------------------------
def test_background_grid_is_the_heatmap_and_the_closed_form(rosenbrock):
    prob, bg = rosenbrock
    g = bg["grid"]
    (x0, x1), (y0, y1) = prob.domain
    xs, ys = np.linspace(x0, x1, 100), np.linspace(y0, y1, 100)
    X, Y = np.meshgrid(xs, ys)
    F = rosen(X, Y)
    np.testing.assert_allclose(g["z"], np.log10(F - F.min() + 1e-3), rtol=0, atol=1e-9)
    assert g["fmin"] == pytest.approx(F.min(), abs=1e-12) and g["offset"] == 1e-3
    np.testing.assert_array_equal(g["z"], bg["data"][0]["z"])        # the same grid the heatmap shows
    same({"data": bg["data"], "layout": bg["layout"]}, old_function_background(prob))   # 2D unchanged


def test_surface3d_surface_and_path_heights_are_exact(rosenbrock):
    prob, bg = rosenbrock
    g = bg["grid"]
    pts = spiral()
    z = V.path_heights(prob, pts, bg)
    expect = np.log10(rosen(pts[:, 0], pts[:, 1]) - g["fmin"] + 1e-3)
    np.testing.assert_allclose(z, expect, rtol=0, atol=1e-9)
    fig = V.surface3d_figure(bg, pts, z, steps=np.arange(len(pts)))
    surf = trace(fig, type_="surface")
    assert np.shape(surf["z"]) == (100, 100) and len(surf["x"]) == 100 and len(surf["y"]) == 100
    np.testing.assert_array_equal(surf["z"], g["z"])
    np.testing.assert_array_equal(surf["x"], g["x"])
    np.testing.assert_array_equal(surf["y"], g["y"])
    path = trace(fig, "path")
    assert path["type"] == "scatter3d"
    np.testing.assert_array_equal(path["x"], pts[:, 0])
    np.testing.assert_array_equal(path["y"], pts[:, 1])
    np.testing.assert_allclose(path["z"], expect, rtol=0, atol=1e-9)
    se = trace(fig, "start / end")
    assert se["text"] == ["start", "end"] and se["z"] == [pytest.approx(expect[0]), pytest.approx(expect[-1])]
    mins = trace(fig, "minima")          # the minimum (1, 1) at its own exact height
    assert (mins["x"], mins["y"]) == ([1.0], [1.0])
    assert mins["z"][0] == pytest.approx(np.log10(0.0 - g["fmin"] + 1e-3), abs=1e-9)
    sc = fig["layout"]["scene"]
    assert sc["camera"]["eye"] and sc["xaxis"]["title"]["text"] == "x" and sc["zaxis"]["title"]["text"]
    assert sc["xaxis"]["range"] == [-2.0, 2.0] and sc["yaxis"]["range"] == [-1.0, 3.0]
    go.Figure(fig)                       # every key is one plotly knows
    assert "<script" in V.figures_html({"3d": fig})


def test_surface3d_on_grid_nodes_without_z_interpolates_the_grid(rosenbrock):
    prob, bg = rosenbrock
    g = bg["grid"]
    ij = [(3, 5), (50, 60), (99, 0), (0, 99)]
    pts = np.array([[g["x"][i], g["y"][j]] for i, j in ij])
    fig = V.surface3d_figure(bg, pts)            # z=None: bilinear of the grid, exact at its nodes
    np.testing.assert_allclose(trace(fig, "path")["z"], [g["z"][j, i] for i, j in ij], rtol=0, atol=1e-12)
    np.testing.assert_allclose(V.path_heights(prob, pts, bg), [g["z"][j, i] for i, j in ij], rtol=0, atol=1e-9)


def test_path_heights_below_the_grid_sit_on_its_floor_and_nonfinite_is_a_gap():
    prob = wb.problems.make("saddle")
    bg = V.function_background(prob, n=21)
    z = V.path_heights(prob, np.array([[0.0, 0.0], [0.0, 50.0], [np.nan, 0.0]]), bg)
    assert np.isfinite(z[0]) and z[1] == bg["grid"]["z"].min() and np.isnan(z[2])
    with pytest.raises(ValueError, match="grid"):
        V.surface3d_figure({"data": [], "layout": {}}, np.zeros((1, 2)))
    with pytest.raises(ValueError, match="z: 1 heights for 2 points"):
        V.surface3d_figure(bg, np.zeros((2, 2)), z=[0.0])


# -- replay ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [0, 7, 39])
def test_upto_draws_k_plus_one_points_and_marks_step(rosenbrock, k):
    prob, bg = rosenbrock
    pts = spiral()
    steps = np.arange(len(pts)) * 5
    z = V.path_heights(prob, pts, bg)
    for fig in (V.function_path_figure(bg, pts, steps=steps, upto=k),
                V.surface3d_figure(bg, pts, z, steps=steps, upto=k)):
        path = trace(fig, "path")
        assert len(path["x"]) == k + 1 and len(path["y"]) == k + 1
        np.testing.assert_array_equal(np.c_[path["x"], path["y"]], pts[:k + 1])
        now = fig["data"][-1]                    # the marker is the last trace, on top
        assert now["name"] == f"step {5 * k}" and now["text"] == [f"step {5 * k}"]
        assert (now["x"], now["y"]) == ([pts[k, 0]], [pts[k, 1]]) and now["marker"]["size"] >= 9
        if now["type"] == "scatter3d":
            assert now["z"] == [pytest.approx(z[k])] and len(path["z"]) == k + 1
            assert trace(fig, "start")["text"] == ["start"]
        go.Figure(fig)
    plane = V.plane_figure(plane_surf(), [("run", pts)], upto=k, steps=steps)
    assert len(trace(plane, "run")["x"]) == k + 1 and plane["data"][-1]["name"] == f"step {5 * k}"
    p3 = V.plane_surface3d_figure(plane_surf(), [("run", pts / 2)], upto=k)
    assert len(trace(p3, "run")["z"]) == k + 1 and p3["data"][-1]["name"] == f"step {k}"


def test_upto_is_clamped_and_hot_swaps_after_it_are_not_marked(rosenbrock):
    _, bg = rosenbrock
    pts, steps = spiral(), np.arange(40)
    ev = [{"step": 5, "optimizer": "adam"}, {"step": 30, "optimizer": "sgd"}]
    fig = V.function_path_figure(bg, pts, ev, steps, upto=10)
    assert trace(fig, "hot swap")["x"] == [pts[5, 0]]
    assert len(trace(V.function_path_figure(bg, pts, upto=10_000), "path")["x"]) == 40
    assert len(trace(V.function_path_figure(bg, pts, upto=-3), "path")["x"]) == 1
    with pytest.raises(TypeError, match="upto"):
        V.function_path_figure(bg, pts, upto="5")


def test_upto_none_is_the_previous_output(rosenbrock):
    prob, bg = rosenbrock
    long = np.c_[np.linspace(-1.5, 1.5, 2000), np.linspace(2.5, -0.5, 2000)]
    pins = [{"label": "sgd", "path": spiral(25)}, {"label": EVIL, "path": spiral(10)[::-1]}]
    ev = [{"step": 3, "optimizer": "adam"}]
    for pts, steps in ((spiral(), np.arange(40)), (long, np.arange(2000)), (spiral()[:1], None)):
        same(V.function_path_figure(bg, pts, ev, steps, pins), old_function_path_figure(bg, pts, ev, steps, pins))
        same(V.function_path_figure(bg, pts, ev, steps, pins, upto=None),
             old_function_path_figure(bg, pts, ev, steps, pins))
    xy = spiral() / 3
    for surf in (None, plane_surf(), -plane_surf()):
        for paths in ([("pinned", xy[::-1] * 0.5), ("adam (this run)", xy)], [("only", xy)], []):
            same(V.plane_figure(surf, paths, [0.7, 0.2]), old_plane_figure(surf, paths, [0.7, 0.2]))


# -- the PCA plane in 3D --------------------------------------------------------------------------------------
def test_plane_surface3d_heights_at_nodes_are_the_grid_and_bilinear_between():
    surf = plane_surf()
    a, b = surf["alpha"].values, surf["beta"].values
    zl = np.log10(surf.values.T)                       # rows = beta, as the heatmap
    nodes = [(0, 0), (3, 7), (10, 12), (5, 1)]
    xy = np.array([[a[i], b[j]] for i, j in nodes])
    fig = V.plane_surface3d_figure(surf, [("pinned", xy[::-1]), ("live", xy)], explained=[0.8, 0.15])
    s = trace(fig, type_="surface")
    np.testing.assert_array_equal(s["z"], zl)
    live = trace(fig, "live")
    np.testing.assert_allclose(live["z"], [zl[j, i] for i, j in nodes], rtol=0, atol=1e-12)
    pin = trace(fig, "pinned")
    assert pin["line"]["dash"] == "dash"
    np.testing.assert_allclose(pin["z"], [zl[j, i] for i, j in nodes[::-1]], rtol=0, atol=1e-12)
    mid = np.array([[(a[2] + a[3]) / 2, (b[4] + b[5]) / 2], [a[-1] + 1.0, b[0]]])
    z = trace(V.plane_surface3d_figure(surf, [("m", mid)]), "m")["z"]
    assert z[0] == pytest.approx(zl[4:6, 2:4].mean(), abs=1e-12) and np.isnan(z[1])   # outside the grid: a gap
    assert "80%" in fig["layout"]["title"]["text"] and fig["layout"]["scene"]["camera"]["eye"]
    assert fig["layout"]["scene"]["xaxis"]["title"]["text"] == "PC 1"
    assert V.plane_surface3d_figure(None, [("live", xy)]) is None
    go.Figure(fig)


# -- escaping -------------------------------------------------------------------------------------------------
def test_labels_are_escaped_in_every_space_view(rosenbrock):
    prob, bg = rosenbrock
    pts = spiral()
    pins = [{"label": EVIL, "path": spiral(12)}]
    ev = [{"step": 2, "optimizer": EVIL}]
    figs = [V.surface3d_figure(bg, pts, V.path_heights(prob, pts, bg), np.arange(40), upto=20, pins=pins,
                               events=ev),
            V.function_path_figure(bg, pts, ev, np.arange(40), pins, upto=3),
            V.plane_figure(plane_surf(), [(EVIL, pts / 3), ("live", pts / 3)], upto=4),
            V.plane_surface3d_figure(plane_surf(), [(EVIL, pts / 3), (EVIL, pts / 3)], title=EVIL, upto=4)]
    for fig in figs:
        text = json.dumps(fig, default=lambda o: o.tolist())
        assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    pin3d = trace(figs[0], f"{PIN_PREFIX}&lt;img src=x onerror=alert(1)&gt;")
    assert pin3d["type"] == "scatter3d" and pin3d["line"]["dash"] == "dash"
    assert trace(figs[0], "hot swap")["text"] == ["step 2: ↦ &lt;img src=x onerror=alert(1)&gt;"]


def test_views_reexports_the_old_names():
    import widgets.views_space as VS
    for name in ("thin", "snapshot_run", "snapshot_record", "RunTracker", "_floats", "plotly_template",
                 "function_path_figure", "function_background", "plane_figure", "figures_html", "surface3d_figure",
                 "plane_surface3d_figure", "path_heights", "PIN_COLORS", "log_ticks", "symlog"):
        assert hasattr(V, name), name
    assert V.plane_figure is VS.plane_figure and V.surface3d_figure is VS.surface3d_figure
