"""Records (save/load, atomicity, schema) and the command line."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

import workbench as wb
import workbench_cli as cli


@pytest.fixture(scope="module")
def record():
    prob = wb.problems.make("gaussian-mixture", classes=3, dim=4, n_train=64, n_test=32)
    return wb.train(prob, optimizer="sgd", lr=0.1, momentum=0.5, steps=12, batch_size=16, progress=False,
                    probes=[wb.probes.Norms(every=3), wb.probes.Eval(every=4),
                            wb.probes.Trajectory(every=6)]).record


def test_record_schema(record):
    assert record.attrs["workbench_schema"] == 1
    cfg = wb.records.config(record)
    assert cfg["optimizer"] == "sgd" and cfg["hparams"]["momentum"] == 0.5 and cfg["problem"]["name"] == \
        "gaussian-mixture" and cfg["batch_size"] == 16 and cfg["seed"] == 0
    assert json.loads(record.attrs["versions"])["torch"]
    assert {"norms_step", "eval_step", "trajectory_step", "step"} <= set(record.coords)
    for name, var in record.data_vars.items():
        assert var.attrs.get("long_name"), name
        assert "description" in var.attrs, name
    assert record.weight_norm.dims == ("norms_step",) and record.test_accuracy.dims == ("eval_step",)


def test_save_load_roundtrip(tmp_path, record):
    path = wb.save(record, tmp_path / "sub" / "run.nc")
    back = wb.load(path)
    xr.testing.assert_identical(back.drop_vars("optimizer"), record.drop_vars("optimizer"))
    assert list(back.optimizer.values) == list(record.optimizer.values)
    assert back.attrs == record.attrs
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]


def test_interrupted_save_leaves_no_partial_file(tmp_path, record, monkeypatch):
    target = tmp_path / "run.nc"
    wb.save(record, target)
    before = target.read_bytes()

    def boom(self, path, *a, **k):
        with open(path, "wb") as fh:
            fh.write(b"CDF half written")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(KeyboardInterrupt):
        wb.save(record, target)
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["run.nc"]
    new_target = tmp_path / "never.nc"
    with pytest.raises(KeyboardInterrupt):
        wb.save(record, new_target)
    assert not new_target.exists()


def test_load_rejects_corrupt_and_foreign_files(tmp_path):
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(200))
    with pytest.raises(ValueError, match="not a readable netCDF"):
        wb.load(junk)
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"a": ("x", np.arange(3))}).to_netcdf(foreign)
    with pytest.raises(ValueError, match="not a workbench record"):
        wb.load(foreign)
    with pytest.raises(FileNotFoundError):
        wb.load(tmp_path / "missing.nc")
    with pytest.raises(ValueError, match="xarray.Dataset"):
        wb.save({"not": "a dataset"}, tmp_path / "x.nc")


CONFIG = textwrap.dedent("""
    [problem]
    name = "gaussian-mixture"
    classes = 3
    n_train = 64
    [train]
    optimizer = "sgd"
    lr = 0.05
    momentum = 0.9
    steps = 15
    [[probes]]
    type = "Eval"
    every = 5
""")


def test_cli_run_writes_record(tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(CONFIG)
    out = tmp_path / "out.nc"
    assert cli.main(["run", str(cfg), "-o", str(out), "-q"]) == 0
    rec = wb.load(out)
    assert rec.sizes["step"] == 15 and rec.eval_step.values.tolist() == [0, 5, 10, 15]
    assert "finished" in capsys.readouterr().out


@pytest.mark.parametrize("edit,needle", [
    (("lr = 0.05", "lr = -1"), "lr"),
    (("steps = 15", "steps = 0"), "steps"),
    (('name = "gaussian-mixture"', 'name = "nope"'), "problem"),
    (("classes = 3", 'classes = "three"'), "classes"),
    (('type = "Eval"', 'type = "Magic"'), "probes[0].type"),
    (("every = 5", "every = 0"), "every"),
    (("momentum = 0.9", "momentum = 0.9\nbogus = 1"), "bogus"),
    (("[train]", "[trian]"), "trian"),
    (("lr = 0.05", "lr = = 0.05"), "TOML"),
])
def test_cli_bad_config_one_line_exit_2(tmp_path, capsys, edit, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(CONFIG.replace(*edit))
    assert cli.main(["run", str(cfg), "-o", str(tmp_path / "o.nc"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error:") and needle in err
    assert not (tmp_path / "o.nc").exists()


def test_cli_list_and_usage_errors(capsys):
    assert cli.main(["list", "problems"]) == 0
    out = capsys.readouterr().out
    assert "digits-mlp" in out and "rosenbrock" in out
    assert cli.main(["list", "optimizers"]) == 0 and "adam" in capsys.readouterr().out
    assert cli.main(["list", "probes"]) == 0 and "Norms" in capsys.readouterr().out
    assert cli.main(["list", "cakes"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cakes" in err
    assert cli.main(["app", "--port", "99999"]) == 2
    assert "--port" in capsys.readouterr().err


def test_cli_console_script_diverged_run_saves(tmp_path):
    cfg = tmp_path / "div.toml"
    cfg.write_text('[problem]\nname = "quadratic"\nlambda2 = 10.0\n[train]\noptimizer = "gd"\nlr = 0.5\nsteps = 300\n')
    out = tmp_path / "div.nc"
    proc = subprocess.run([sys.executable, "-m", "workbench_cli", "run", str(cfg), "-o", str(out), "-q"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "diverged" in proc.stdout
    rec = wb.load(out)
    assert rec.attrs["status"] == "diverged" and rec.sizes["step"] > 3


def test_cli_list_into_a_closed_pipe_is_quiet():
    # `workbench list optimizers | head -1`: the reader is gone before the listing is written
    proc = subprocess.Popen([sys.executable, "-m", "workbench_cli", "list", "optimizers"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()                      # closed long before the interpreter has even imported workbench
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
