"""Views of many runs (widgets/compare.py): phase diagram, run comparison, parallel coordinates, results index."""
import json
import os

import numpy as np
import pytest
import xarray as xr

import workbench as wb
from widgets.compare import (cell_from_click, compare_runs, is_log_axis, parallel_coordinates, phase_diagram,
                             runs_index)
from workbench.outcomes import summarize


@pytest.fixture(scope="module")
def rec():
    return wb.sweep("quadratic", {"lr": [0.01, 0.05, 0.1, 0.19, 0.21], "problem.lambda2": [5.0, 10.0],
                                  "seed": [0, 1]},
                    train={"steps": 60}, probes=[{"type": "Sharpness", "every": 10}], scheduler="synchronous",
                    progress=False)


def test_phase_diagram_values_markers_hover_and_click(rec):
    fig = phase_diagram(rec, "final_loss", x="lr", y="problem.lambda2")
    heat = fig.data[0]
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type != "log"   # 0.01..0.21 spans a decade; 5..10 not
    s = summarize(rec).final_loss.where(lambda v: np.isfinite(v)).mean("seed").transpose("problem.lambda2", "lr")
    z = np.asarray(heat.z, dtype=float)
    expect = s.values
    shown = np.log10(expect) if fig.data[0].colorbar.title.text.startswith("log10") else expect
    np.testing.assert_allclose(z, shown, rtol=1e-12, equal_nan=True)
    # GD on a quadratic diverges where lr > 2/lambda: only (lr 0.21, lambda 10) here
    marks = fig.data[1]
    assert marks.name == "diverged" and list(marks.x) == [0.21] and list(marks.y) == [10.0]
    assert fig.layout.meta["diverged_cells"] == 1
    assert "diverged: 2 of 2" in heat.text[1][4] and "lr = 0.21" in heat.text[1][4]
    assert "mean of 2" in heat.text[0][0]
    # a click carries the cell's coordinates
    click = {"points": [{"x": 0.1, "y": 10.0, "customdata": heat.customdata[1][2]}]}
    assert cell_from_click(click) == {"lr": 0.1, "problem.lambda2": 10.0}
    assert cell_from_click({"points": []}) is None and cell_from_click(None) is None
    # another outcome, reduce, and a single dimension
    f2 = phase_diagram(rec, "sharpness_ratio", x="lr", y="problem.lambda2", reduce="max")
    np.testing.assert_allclose(np.asarray(f2.data[0].z, float)[1, 2], 10.0 * 0.1 / 2, rtol=1e-3)
    f1 = phase_diagram(rec.sel({"problem.lambda2": 10.0}).drop_vars("problem.lambda2"), "final_loss", x="lr",
                       y="seed")
    assert np.asarray(f1.data[0].z).shape == (2, 5)
    with pytest.raises(ValueError, match="x='momentum'"):
        phase_diagram(rec, x="momentum")
    with pytest.raises(ValueError, match="outcome='nope'"):
        phase_diagram(rec, "nope")
    with pytest.raises(ValueError, match="reduce"):
        phase_diagram(rec, reduce="sum")


def test_views_escape_text_from_records(rec):
    evil = "<img src=x onerror=alert(1)>"
    r = rec.rename({"seed": evil})
    r.attrs["sweep_dims"] = json.dumps(["lr", "problem.lambda2", evil])
    fig = phase_diagram(r, x="lr", y=evil)
    blob = fig.to_json()
    assert "<img" not in blob and "&lt;img" in blob
    pc = parallel_coordinates(r).to_json()
    assert "<img" not in pc
    cmp = compare_runs({evil: rec.isel(lr=0, **{"problem.lambda2": 0})}).to_json()
    assert "<img" not in cmp


def test_compare_runs_mean_spread_and_alignment(rec):
    cell = rec.sel(lr=0.05, **{"problem.lambda2": 10.0})
    cell = cell.assign(loss=cell.loss + xr.DataArray([0.0, 1.0], dims="seed"))     # seeds differ by 1
    fig = compare_runs({"gd": cell, "other": rec.sel(lr=0.01, seed=0, **{"problem.lambda2": 5.0})}, var="loss",
                       spread="minmax", log=False)
    band, mean, single = fig.data
    assert band.fill == "toself" and mean.name == "gd (mean of 2)" and single.name == "other"
    np.testing.assert_allclose(mean.y, cell.loss.mean("seed").values)
    n = cell.sizes["step"]
    np.testing.assert_allclose(band.y[:n], cell.loss.max("seed").values)
    np.testing.assert_allclose(band.y[n:][::-1], cell.loss.min("seed").values)
    std = compare_runs({"gd": cell}, spread="std")
    np.testing.assert_allclose(std.data[0].y[:n], (cell.loss.mean("seed") + cell.loss.std("seed")).values)
    # the same label given twice stacks the runs as seeds
    a, b = (rec.sel(lr=0.05, seed=s, **{"problem.lambda2": 10.0}) for s in (0, 1))
    assert compare_runs({"gd": [a, b]}).data[1].name == "gd (mean of 2)"
    # probe variables on their own steps, and wall-clock alignment
    sh = compare_runs({"gd": a}, var="sharpness")
    np.testing.assert_array_equal(sh.data[0].x, a.sharpness_step.values)
    wt = compare_runs({"gd": a}, var="loss", align="wall_time")
    np.testing.assert_allclose(wt.data[0].x, a.wall_time.values)
    assert wt.layout.xaxis.title.text == "wall time (s)"
    with pytest.raises(ValueError, match="var='nope'"):
        compare_runs({"gd": a}, var="nope")
    with pytest.raises(ValueError, match="align"):
        compare_runs({"gd": a}, align="epoch")
    with pytest.raises(ValueError, match="select one cell"):
        compare_runs({"all": rec})


def test_parallel_coordinates_axes_and_diverged(rec):
    fig = parallel_coordinates(rec, "final_loss")
    dims = fig.data[0].dimensions
    assert [d.label for d in dims] == ["lr (log10)", "problem.lambda2", "seed", "final_loss (log10)"]
    np.testing.assert_allclose(sorted(set(dims[0].values)), np.log10([0.01, 0.05, 0.1, 0.19, 0.21]))
    out = dims[-1]
    assert out.ticktext[-1] == "diverged"
    flat = rec.status.stack(cell=["lr", "problem.lambda2", "seed"]).values.astype(str)
    vals = np.asarray(out.values)
    assert np.all(vals[flat == "diverged"] == out.tickvals[-1])
    assert np.all(vals[flat != "diverged"] < out.tickvals[-1])
    opt = wb.sweep("quadratic", {"optimizer": ["gd", "adam"], "lr": [0.01, 0.1]}, train={"steps": 10},
                   scheduler="synchronous", progress=False)
    cat = parallel_coordinates(opt).data[0].dimensions[0]
    assert list(cat.ticktext) == [str(o) for o in opt.optimizer.values] and sorted(set(cat.values)) == [0, 1]


def test_is_log_axis():
    assert is_log_axis([1e-3, 1e-2, 1e-1]) and not is_log_axis([1, 2, 3]) and not is_log_axis([0, 1, 100])
    assert not is_log_axis(["a", "b"]) and not is_log_axis([5.0])


def test_runs_index_filters_and_survives_bad_files(tmp_path):
    quad = wb.problems.make("quadratic", lambda2=10.0)
    for opt, lr in (("gd", 0.05), ("gd", 0.3), ("adam", 0.05)):
        run = wb.train(quad, optimizer=opt, lr=lr, steps=30, progress=False)
        wb.save(run.record, tmp_path / f"{opt}-{lr}.nc")
    (tmp_path / "broken.nc").write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(300))
    (tmp_path / "notes.txt").write_text("not a record")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.nc"
    wb.save(run.record, outside)
    (tmp_path / "link.nc").symlink_to(outside)
    rows = runs_index(tmp_path)
    names = {r["file"] for r in rows}
    assert names == {"gd-0.05.nc", "gd-0.3.nc", "adam-0.05.nc", "broken.nc"}
    bad = next(r for r in rows if r["file"] == "broken.nc")
    assert bad["status"] == "unreadable" and bad["error"]
    gd = runs_index(tmp_path, optimizer="gd")
    assert {r["file"] for r in gd} == {"gd-0.05.nc", "gd-0.3.nc"}
    div = runs_index(tmp_path, status="diverged")
    assert [r["file"] for r in div] == ["gd-0.3.nc"]
    ok = next(r for r in rows if r["file"] == "gd-0.05.nc")
    assert ok["problem"] == "quadratic" and ok["lr"] == 0.05 and ok["steps"] == 30
    assert ok["final_loss"] == pytest.approx(float(wb.load(tmp_path / "gd-0.05.nc").loss.values[-1]))
    with pytest.raises(ValueError, match="directory"):
        runs_index(tmp_path / "nope")
