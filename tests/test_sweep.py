"""Sweeps on a real Dask LocalCluster: grid dimensions, equality with single runs, failures kept, CLI."""
import numpy as np
import pytest

import workbench as wb
from workbench import cli

GRID = {"optimizer": ["sgd", "adam"], "lr": [0.001, 0.01]}
TRAIN = {"steps": 12, "batch_size": 32}
PROBES = [{"type": "Eval", "every": 6}]


def single(opt, lr):
    prob = wb.problems.make("gaussian-mixture", seed=0, classes=3, dim=4, n_train=64)
    return wb.train(prob, optimizer=opt, lr=lr, progress=False, device="cpu",
                    probes=[wb.probes.Eval(every=6)], **TRAIN).record


@pytest.mark.slow
def test_dask_sweep_matches_single_runs():
    rec = wb.sweep("gaussian-mixture", GRID, problem_options={"classes": 3, "dim": 4, "n_train": 64}, train=TRAIN,
                   probes=PROBES, n_workers=2, progress=False)
    assert rec.loss.dims == ("optimizer", "lr", "step")
    assert rec.sizes["optimizer"] == 2 and rec.sizes["lr"] == 2
    assert (rec.status.values == "finished").all()
    for opt in GRID["optimizer"]:
        for lr in GRID["lr"]:
            ref = single(opt, lr)
            np.testing.assert_allclose(rec.loss.sel(optimizer=opt, lr=lr).values, ref.loss.values, rtol=1e-6)
            np.testing.assert_allclose(rec.test_loss.sel(optimizer=opt, lr=lr).values, ref.test_loss.values,
                                       rtol=1e-6)
    assert rec.loss.attrs["long_name"] == "training loss" and rec.attrs["n_runs"] == 4


def test_synchronous_sweep_keeps_diverged_runs(tmp_path):
    rec = wb.sweep("quadratic", {"lr": [0.1, 0.5]}, problem_options={"lambda2": 10.0}, train={"steps": 200},
                   scheduler="synchronous", progress=False)
    assert rec.status.sel(lr=0.1).item() == "finished" and rec.status.sel(lr=0.5).item() == "diverged"
    short = rec.loss.sel(lr=0.5).values
    n = int(rec.steps_done.sel(lr=0.5))
    assert n < 200 and np.all(np.isnan(short[n:])) and np.isfinite(short[: n - 1]).all()
    wb.save(rec, tmp_path / "s.nc")
    assert wb.load(tmp_path / "s.nc").attrs["kind"] == "sweep"


@pytest.mark.parametrize("grid,needle", [
    ({}, "non-empty"), ({"lr": []}, "lr"), ({"lr": [0.1, 0.1]}, "repeated"), ({"lr": [-1.0]}, "lr"),
    ({"optimizer": ["sgd", "nope"]}, "optimizer"), ({"problem.width": [0]}, "width"), ({"device": ["cpu"]}, "device"),
])
def test_bad_grids_fail_before_running(grid, needle):
    with pytest.raises(ValueError, match=needle):
        wb.sweep("gaussian-mixture", grid, train={"steps": 2}, scheduler="synchronous", progress=False)


def test_cli_sweep(tmp_path, capsys):
    cfg = tmp_path / "sw.toml"
    cfg.write_text('[problem]\nname = "quadratic"\n[train]\noptimizer = "gd"\nsteps = 20\n'
                   '[sweep]\ngrid = { lr = [0.1, 0.2], seed = [0, 1] }\nscheduler = "synchronous"\n')
    out = tmp_path / "sw.nc"
    assert cli.main(["sweep", str(cfg), "-o", str(out), "-q"]) == 0
    rec = wb.load(out)
    assert rec.loss.dims == ("lr", "seed", "step")
    assert "4 runs (4 finished)" in capsys.readouterr().out
    cfg.write_text(cfg.read_text().replace("lr = [0.1, 0.2]", "lr = [0.1, -2.0]"))
    assert cli.main(["sweep", str(cfg), "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "lr" in err and err.count("\n") == 1
