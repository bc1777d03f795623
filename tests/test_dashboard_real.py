"""The dashboard and the CLI meet real problems (issue 11): the device choice (recorded in the run's config, shown in
the status line, an unavailable one refused beside its control), the problem list with sizes and missing data, the
small options real problems start with, the user's own problem loaded from a file (the function the CLI uses), and
`workbench list problems` / `workbench app --problem` from the command line."""
import textwrap
import time

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import workbench as wb
from widgets import Dashboard
from widgets import app as wapp
from widgets import catalog
from widgets.catalog import DASHBOARD_OPTIONS, DASHBOARD_RUN, count_text, dashboard_options, problem_label
import workbench_cli as cli
from workbench.config import load_user_problem
from workbench._validate import resolve_device

from test_dashboard import drive, setv

REAL = sorted(DASHBOARD_OPTIONS)


@pytest.fixture
def no_cifar(tmp_path, monkeypatch):
    """CIFAR-10 is not on this machine (an empty WORKBENCH_DATA), and the size cache forgets what it knew."""
    empty = tmp_path / "nodata"
    empty.mkdir()
    monkeypatch.setenv("WORKBENCH_DATA", str(empty))
    catalog._info.cache_clear()
    yield empty
    catalog._info.cache_clear()


@pytest.fixture
def dash(tmp_path):
    made = []

    def build(**kw):
        d = Dashboard(results_dir=tmp_path / "results", **kw)
        made.append(d)
        return d

    yield build
    for d in made:
        d.stop()
        if d.run is not None:
            d.run.wait(30)


def one_line_error(capsys, needle):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and needle in err, err
    return err


# -- device ----------------------------------------------------------------------------------------------------
def test_device_choice_is_recorded_and_shown(dash):
    d = dash()
    values = list(d.device_select.options.values())
    assert values[:2] == ["auto", "cpu"] and d.device_select.value == "auto"
    assert ("cuda" in values) == torch.cuda.is_available()
    assert f"auto ({resolve_device('auto')})" in d.device_select.options
    d.set_device("cpu")
    setv(d.run_form, "steps", "1000000")
    run = d.start()
    assert run is not None and run.config["device"] == "cpu"
    drive(d, until=lambda: d._shown > 3)
    assert "<b>running</b> on cpu · step" in d.status.object
    d.stop(wait=5)
    drive(d)
    assert "<b>stopped</b> on cpu" in d.status.object
    assert wb.records.config(run.record)["device"] == "cpu" and run.record.attrs["device"] == "cpu"
    d.device_select.value = "auto"
    setv(d.run_form, "steps", "30")
    run = d.start()
    drive(d)
    assert run.config["device"] == str(resolve_device("auto"))
    assert f"<b>finished</b> on {resolve_device('auto')}" in d.status.object
    # the Pause/Step gate is the run's callback: the app's runs sync every step on every device
    assert run.config["sync_every"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where there is no GPU")
def test_unavailable_device_is_refused_beside_the_control(dash):
    d = dash(device="cuda")                     # chosen programmatically on a machine without CUDA
    assert d.device_select.value == "cuda" and "cuda (not available)" in d.device_select.options
    assert d.device_error.visible and "cuda" in d.device_error.object and "not available" in d.device_error.object
    assert d.start() is None and d.run is None
    assert d.error.visible and "device" in d.error.object
    assert d.race([("adam", {"lr": 0.01})]) is None
    d.device_select.value = "cpu"               # picking an available one clears it and Run goes
    assert not d.device_error.visible
    run = d.start()
    assert run is not None and run.config["device"] == "cpu"
    run.wait(60)


@pytest.mark.parametrize("bad", ["tpu", "", "cuda:x", 3, None])
def test_device_that_names_nothing_raises(dash, bad):
    d = dash()
    with pytest.raises(ValueError, match="device"):
        d.set_device(bad)
    assert d.device_select.value == "auto"


def test_device_change_during_a_run_applies_to_the_next(dash):
    d = dash()
    setv(d.run_form, "steps", "1000000")
    run = d.start()
    d.device_select.value = "cpu"
    assert d.error.visible and "next Run" in d.error.object
    assert run.config["device"] == str(resolve_device("auto"))
    d.stop(wait=5)


# -- the problem list --------------------------------------------------------------------------------------------
def test_count_text():
    assert [count_text(n) for n in (0, 999, 1000, 1437, 60000, 99_950, 999_500, 10_745_088)] == \
        ["0", "999", "1k", "1.4k", "60k", "100k", "1M", "10.7M"]


@given(st.integers(0, 10**11))
def test_count_text_is_short_and_close(n):
    text = count_text(n)
    unit = {"k": 1e3, "M": 1e6, "G": 1e9}.get(text[-1], 1)
    value = float(text[:-1] if unit != 1 else text) * unit
    assert len(text) <= 5 and abs(value - n) <= 0.05 * n + 1e-9, text
    assert not text.startswith("1000")                       # 999,999 is '1M', never '1000k'


def test_problem_list_shows_every_problem_with_its_size(dash):
    d = dash()
    labels = {v: k for k, v in d.problem_select.options.items()}
    assert set(labels) == set(wb.problems.list())
    functions = set(wb.problems.list("function"))
    for name, label in labels.items():
        assert label.startswith(name + " · "), label
        if name in functions:
            assert "2D test function" in label
            continue
        info = wb.problems.info(name)
        assert f"{count_text(info['n_params'])} params" in label, label
        ex = count_text(info["n_train"]) + (f"/{count_text(info['n_test'])}" if info.get("n_test") else "")
        assert f"{ex} examples" in label, label
        assert label.endswith("(data missing)") == (not info["data_available"]), label
    # sizes are true: the label's parameter count is that of the problem built with its default options
    prob = wb.problems.make("digits-mlp")
    assert f"{count_text(prob.n_params)} params" in labels["digits-mlp"]
    assert f"{count_text(len(prob.train))}/{count_text(len(prob.test))} examples" in labels["digits-mlp"]


def test_missing_data_is_labelled_and_explained_inline(dash, no_cifar):
    info = wb.problems.info("cifar-resnet")
    assert info["data_available"] is False
    d = dash()
    label = next(k for k, v in d.problem_select.options.items() if v == "cifar-resnet")
    assert label.endswith("(data missing)")
    d.problem_select.value = "cifar-resnet"
    assert d.problem_note.visible and info["data_note"] in d.problem_note.object.replace("&#x27;", "'")
    assert "synthetic" in d.problem_note.object
    assert d.problem_form.widgets["data"].value == "synthetic"     # so Run works before the data is there
    assert "data_dir" not in d.problem_form.widgets                # no server paths typed into the app
    d.problem_form.widgets["data"].value = "real"                  # asking for the missing data: said inline
    assert d.start() is None and d.run is None
    assert d.problem_note.visible and str(no_cifar) in d.problem_note.object


def test_dashboard_options_are_options_of_their_problems():
    assert set(REAL) <= set(wb.problems.list())
    for name in REAL:
        specs = {p.name: p for p in wb.problems.options(name)}
        missing = set(DASHBOARD_OPTIONS[name]) - set(specs)
        assert not missing, f"{name}: {missing} are not options"
        for k, v in DASHBOARD_OPTIONS[name].items():
            assert specs[k].validate(v, name) == v
        assert DASHBOARD_OPTIONS[name].get("n_train", 0) <= 2048


def test_real_problem_sets_minibatches_and_gives_them_back(dash):
    d = dash()
    assert d.run_form.widgets["batch_size"].value == "None"
    d.problem_select.value = "fashion-cnn"
    assert d.run_form.widgets["batch_size"].value == "128" and "batch_size=128" in d.problem_note.object
    d.problem_select.value = "mnist1d-mlp"
    assert d.run_form.widgets["batch_size"].value == "128"
    d.problem_select.value = "rosenbrock"                      # back to full batch (one example there)
    assert d.run_form.widgets["batch_size"].value == "None"
    d.problem_select.value = "fashion-cnn"
    setv(d.run_form, "batch_size", "64")                       # the user's own choice is kept
    d.problem_select.value = "digits-mlp"
    assert d.run_form.widgets["batch_size"].value == "64"
    d.apply_preset("edge of stability (digits, GD, MSE)", race=False)
    assert d.run_form.widgets["batch_size"].value == ""        # a preset's run settings win


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_real_problem_starts_small_and_runs_from_the_dashboard(dash, no_cifar, name):
    d = dash()
    d.problem_select.value = name
    start = dashboard_options(name)
    for k, v in start.items():
        w = d.problem_form.widgets[k]
        assert (w.value == v) if k == "data" else (float(w.value) == float(v)), (k, w.value)
    if not wb.problems.info(name)["data_available"] and start.get("data") != "synthetic":
        pytest.skip(f"{name}: data not on this machine")
    setv(d.run_form, "steps", "3")
    t0 = time.perf_counter()
    run = d.start()
    assert run is not None, d.error.object + d.problem_note.object
    drive(d)
    took = time.perf_counter() - t0
    prob = run.problem
    print(f"{name}: {prob.n_params:,} params, {len(prob.train)} train, first point after "
          f"{d.first_point_latency:.2f} s, 3 steps + eval in {took:.2f} s")
    assert run.status == "finished" and np.isfinite(run.record.loss.values).all()
    assert len(prob.train) == start.get("n_train", len(prob.train)) <= 4096 and prob.n_params < 200_000
    assert run.batch_size == DASHBOARD_RUN.get(name, {}).get("batch_size")
    assert "finished" in d.status.object and d.panes["accuracy"].visible


# -- the user's own problem --------------------------------------------------------------------------------------
USER_FILE = """
import torch
import workbench as wb
from helper_mod import WIDTH          # a module next to the file imports (its folder is importable)


def make_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 5, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(5, WIDTH), torch.nn.Tanh(), torch.nn.Linear(WIDTH, 2))
    return wb.problems.custom(model, torch.nn.functional.cross_entropy, (x[:64], y[:64]), test=(x[64:], y[64:]),
                              name="my-net")


def not_a_problem():
    return 42


def broken():
    raise RuntimeError("no GPU in\\nthis room")

CONSTANT = 3
"""


@pytest.fixture
def user_file(tmp_path):
    f = tmp_path / "mine" / "my_problem.py"
    f.parent.mkdir()
    f.write_text(USER_FILE)
    (f.parent / "helper_mod.py").write_text("WIDTH = 7\n")
    return f


def test_user_problem_from_a_file_is_offered_and_runs(dash, user_file):
    prob = load_user_problem(f"{user_file}:make_problem")
    assert isinstance(prob, wb.Problem) and prob.n_params == 5 * 7 + 7 + 7 * 2 + 2
    assert load_user_problem(str(user_file)).n_params == prob.n_params      # default function name
    d = dash(problems=[prob])
    assert d.problem_select.value == "my-net"                                  # selected by default
    label = next(iter(d.problem_select.options))
    assert label == problem_label("my-net", catalog.user_problem_info(prob), user=True)
    assert "(yours)" in label and "58 params" in label and "64/32 examples" in label
    assert d.problem_note.visible and "58 parameters" in d.problem_note.object
    before = [p.detach().clone() for p in prob.model.parameters()]
    setv(d.run_form, "steps", "40")
    run = d.start()
    drive(d)
    assert run.status == "finished" and run.config["problem"]["name"] == "my-net"
    assert run.record.loss.values[-1] < run.record.loss.values[0]
    assert all(torch.equal(a, b) for a, b in zip(before, prob.model.parameters()))   # the shared Problem is intact
    # a saved run of the user's problem loads back with its problem (not looked up in the registry)
    d.export("mine")
    d.reset()
    assert d.load("mine") is not None and d._problem_obj is prob


def test_user_problems_never_shadow_registered_ones(dash, user_file):
    a = load_user_problem(f"{user_file}:make_problem")
    b = load_user_problem(f"{user_file}:make_problem")
    c = wb.problems.make("digits-mlp", width=8, n_train=64)           # a registered problem with the user's options
    d = dash(problems=[a, b, c], problem="my-net-2")
    keys = list(d.problem_select.options.values())
    assert keys[:3] == ["my-net", "my-net-2", "digits-mlp-2"] and keys.count("digits-mlp") == 1
    assert d.problem_select.value == "my-net-2" and d._make_problem() is b
    with pytest.raises(TypeError, match="Problem"):
        Dashboard(problems=["digits-mlp"])


def test_create_app_offers_the_users_problem(tmp_path, user_file):
    prob = load_user_problem(f"{user_file}:make_problem")
    page = wapp.create_app(tmp_path / "results", problems=[prob])
    assert page.dashboard.problem_select.value == "my-net"
    assert wapp.create_app(tmp_path / "results").dashboard.problem_select.value == "rosenbrock"


@pytest.mark.parametrize("suffix,needle", [
    (":nope", "defines no function 'nope'"),
    (":not_a_problem", "returned int, not a workbench Problem"),
    (":broken", "RuntimeError: no GPU in this room"),
    (":CONSTANT", "is a int, not a function"),
])
def test_cli_app_problem_errors_are_one_line_exit_2(capsys, monkeypatch, user_file, suffix, needle):
    served = []
    monkeypatch.setattr(wapp, "serve", lambda **kw: served.append(kw))
    assert cli.main(["app", "--problem", f"{user_file}{suffix}"]) == 2
    one_line_error(capsys, needle)
    assert not served


def test_cli_app_problem_file_errors(tmp_path, capsys, monkeypatch):
    served = []
    monkeypatch.setattr(wapp, "serve", lambda **kw: served.append(kw))
    assert cli.main(["app", "--problem", str(tmp_path / "missing.py:make_problem")]) == 2
    one_line_error(capsys, "does not exist")
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\ndef (:\n")
    assert cli.main(["app", "--problem", f"{bad}:make_problem"]) == 2
    one_line_error(capsys, "SyntaxError")
    exits = tmp_path / "exits.py"
    exits.write_text("import sys\nsys.exit(3)\n")
    assert cli.main(["app", "--problem", f"{exits}:make_problem"]) == 2
    one_line_error(capsys, "SystemExit")
    assert not served


def test_cli_app_serves_every_problem_given(capsys, monkeypatch, user_file):
    served = []
    monkeypatch.setattr(wapp, "serve", lambda **kw: served.append(kw))
    assert cli.main(["app", "--port", "0", "--problem", f"{user_file}:make_problem",
                     "--problem", str(user_file)]) == 0
    (kw,) = served
    assert [p.name for p in kw["problems"]] == ["my-net", "my-net"] and kw["port"] == 0
    assert all(isinstance(p, wb.Problem) for p in kw["problems"])


# -- workbench list problems ----------------------------------------------------------------------------------------
def test_cli_list_problems_shows_sizes_and_data(capsys, no_cifar):
    assert cli.main(["list", "problems"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["problem", "params", "train", "test", "data"]
    rows = {ln.split()[0]: ln for ln in lines[1:]}
    assert list(rows) == wb.problems.list()
    functions = set(wb.problems.list("function"))
    for name, line in rows.items():
        cols = line.split()
        info = wb.problems.info(name)
        assert cols[1] == f"{info['n_params']:,}", line
        if name in functions:
            continue
        assert cols[2] == f"{info['n_train']:,}" and cols[3] == (f"{info['n_test']:,}" if info["n_test"] else "-")
        assert cols[4] == ("present" if info["data_available"] else "MISSING"), line
        if not info["data_available"]:
            assert " ".join(info["data_note"].split()) in line
    assert "MISSING" in rows["cifar-resnet"] and str(no_cifar) in rows["cifar-resnet"]
