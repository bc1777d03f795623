"""The shareable link without a browser (issue 14): the URL query carries the experiment (problem, options,
optimizer, hyperparameters, schedule, run options, probes, device) as JSON; a query opens the same experiment in a
fresh dashboard; what a link carries that is unknown or unreadable is said, never raised; the URL follows every
change of the controls. A real ``panel.io.location.Location`` stands in for the browser's."""
import html
import json
import urllib.parse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from panel.io.location import Location

from widgets import Dashboard
from widgets.dashboard_link import MAX_QUERY, URL_PARAMS, experiment_query, parse_experiment_query


@pytest.fixture
def make(tmp_path):
    def make():
        return Dashboard(results_dir=tmp_path / "results")
    return make


def query(**kw):
    return "?" + urllib.parse.urlencode({k: json.dumps(v) if isinstance(v, dict) else v for k, v in kw.items()})


def controls(d):
    return (d.problem_select.value, d.problem_form.values(), d.optimizer_select.value, d.hparam_form.values(),
            d.schedule_form.values(), d.run_form.values(),
            {n: d.probe_forms[n].values() for n, cb in d.probe_checks.items() if cb.value})


def test_a_link_reopens_the_same_experiment_in_a_fresh_dashboard(make):
    a = make()
    a.problem_select.value = "spirals"
    a.problem_form.widgets["width"].value = "24"
    a.optimizer_select.value = "sgd"
    a.hparam_form.widgets["lr"].value = "0.05"
    a.hparam_form.widgets["momentum"].value = "0.9"
    a.schedule_form.widgets["schedule"].value = "cosine"
    a.schedule_form.widgets["warmup"].value = "10"
    a.run_form.widgets["steps"].value = "77"
    a.run_form.widgets["batch_size"].value = "16"
    a.probe_checks["sharpness"].value = True
    a.probe_forms["sharpness"].widgets["k"].value = "2"
    loc_a = Location()
    assert a.sync_url(loc_a)
    link = loc_a.search
    exp, bad = parse_experiment_query(link)
    assert bad == [] and set(exp) == set(URL_PARAMS)
    assert exp["hparams"]["lr"] == 0.05 and exp["run_options"] == {"steps": 77, "seed": 0, "batch_size": 16}
    b = make()
    b.sync_url(Location(search=link))
    assert controls(b) == controls(a)
    assert b.session.spec() == a.session.spec()
    assert not b.error.visible


def test_the_url_follows_the_controls(make):
    d = make()
    loc = Location()
    d.sync_url(loc)
    d.optimizer_select.value = "adam"
    d.hparam_form.widgets["lr"].value = "0.0042"
    assert parse_experiment_query(loc.search)[0]["hparams"]["lr"] == 0.0042
    d.run_form.widgets["steps"].value = "123"
    exp = parse_experiment_query(loc.search)[0]
    assert exp["optimizer"] == "adam" and exp["run_options"]["steps"] == 123
    d.hparam_form.widgets["lr"].value = "-1"             # invalid: shown beside the field, the URL keeps 0.0042
    assert parse_experiment_query(loc.search)[0]["hparams"]["lr"] == 0.0042
    assert loc.search == experiment_query(d.session)


@pytest.mark.parametrize("search, said", [
    (query(optimizer="nope"), "optimizer 'nope' is not one of the registered optimizers"),
    (query(problem="../../etc"), "problem '../../etc' is not offered here"),
    ("?hp=%7Bbroken", "hp='{broken' is not a JSON object"),
    ("?run=[1,2]", "run='[1,2]' is not a JSON object"),
    (query(device="cuda:7"), "device 'cuda:7' is not available on this machine; kept 'auto'"),
    (query(device="tpu"), "device 'tpu' is not available on this machine"),
])
def test_what_a_link_carries_that_cannot_be_used_is_said_and_the_rest_applied(make, search, said):
    d = make()
    d.sync_url(Location(search=search + "&" + query(run={"steps": 31})[1:]))
    shown = html.unescape(str(d.error.object))
    assert d.error.visible and "Not applied from the link" in shown and said in shown, shown
    assert d.run_form.values()["steps"] == 31


def test_a_huge_query_is_not_read():
    exp, bad = parse_experiment_query("?hp=" + "x" * (MAX_QUERY + 1))
    assert exp == {} and "at most" in bad[0]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_parsing_any_query_never_raises(text):
    exp, bad = parse_experiment_query(text)
    assert set(exp) <= set(URL_PARAMS) and all(isinstance(b, str) for b in bad)
    for name in ("problem_options", "hparams", "schedule", "run_options", "probes"):
        assert name not in exp or isinstance(exp[name], dict)
