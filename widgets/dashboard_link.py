"""The experiment between the dashboard's controls, its session and the page's URL (a mixin of
``widgets.dashboard.Dashboard``): a control that changes moves the session to whatever is valid now; a session set
from outside (a shared link, code) fills the controls; ``sync_url`` ties the session to ``pn.state.location``, so a
link with the query reopens the same problem, optimizer, hyperparameters, schedule, run options, probes and device.
Values a link carries that are unknown or unreadable are said in the error pane and not applied. While a run is
live, a changed hyperparameter or optimizer is a hot swap of that run instead."""
from __future__ import annotations

import contextlib
import json
import urllib.parse

import panel as pn

import workbench as wb
from workbench._validate import resolve_device

__all__ = ["URL_PARAMS", "LinkMixin", "experiment_query", "parse_experiment_query"]

#: session parameter -> URL query key (``Dashboard.sync_url``): a link reopens the same experiment
URL_PARAMS = {"problem": "problem", "problem_options": "options", "optimizer": "optimizer", "hparams": "hp",
              "schedule": "schedule", "run_options": "run", "probes": "probes", "device": "device"}
_DICTS = ("problem_options", "hparams", "schedule", "run_options", "probes")
MAX_QUERY = 8000          # characters of a link's query that are read at all


def experiment_query(session) -> str:
    """The URL query (``?problem=...&hp=...``) that carries ``session``'s experiment: dicts as JSON (``null`` for
    None), names as they are."""
    q = {}
    for name, key in URL_PARAMS.items():
        v = getattr(session, name)
        q[key] = json.dumps(v, sort_keys=True, separators=(",", ":")) if name in _DICTS else str(v)
    return "?" + urllib.parse.urlencode(q)


def parse_experiment_query(search: str) -> tuple[dict, list[str]]:
    """``(experiment, problems)`` from a URL query: the session parameters it carries (query keys other than
    ``URL_PARAMS``' are ignored) and what could not be read, each naming its key."""
    search = (search or "").lstrip("?")
    if len(search) > MAX_QUERY:
        return {}, [f"the link's query is {len(search)} characters long; at most {MAX_QUERY} are read"]
    names = {key: name for name, key in URL_PARAMS.items()}
    exp, bad = {}, []
    for key, raw in urllib.parse.parse_qsl(search, keep_blank_values=True):
        name = names.get(key)
        if name is None:
            continue
        if name not in _DICTS:
            exp[name] = raw
            continue
        try:
            v = json.loads(raw)
        except ValueError:
            v = None
        if not isinstance(v, dict):
            bad.append(f"{key}={raw[:80]!r} is not a JSON object")
            continue
        exp[name] = v
    return exp, bad


class LinkMixin:
    """Needs from the host: ``session``, the sidebar widgets and forms, ``_sync_session``, ``_build_problem_form``,
    ``_build_hparam_form``, ``set_device``, ``_show_error``, ``user_problems`` and the ``_applying`` /
    ``_syncing`` flags."""

    # -- the experiment <-> the controls <-> the URL -------------------------------------------------------
    def _controls_changed(self):
        """A control changed: the session (and so the URL) follows whatever is valid now; nothing is built."""
        if self._applying or not hasattr(self, "hparam_form") or not hasattr(self, "problem_form"):
            return
        try:
            self._sync_session(build=False)
        except ValueError:
            pass                        # shown beside the field; the URL keeps the last valid experiment

    def _session_changed(self, *events):
        """The session's experiment was set from outside the controls (a shared URL, or code): show it."""
        if self._syncing or self._applying:
            return
        self.apply_experiment({e.name: e.new for e in events})

    @contextlib.contextmanager
    def _quiet(self):
        """The session changes because of the controls themselves (nothing to show back)."""
        self._syncing = True
        try:
            yield
        finally:
            self._syncing = False

    def apply_experiment(self, exp: dict, unread=()) -> None:
        """Fill the controls from an experiment dict (the session's parameters; any subset). Unknown names and
        values are said in the error pane (with ``unread``: what a link carried that could not be read) and
        skipped; the rest is applied."""
        s = self.session
        self._applying = True
        bad = list(unread)
        try:
            name = exp.get("problem", self.problem_select.value)
            if name not in self.problem_select.options.values():
                bad.append(f"problem {name!r} is not offered here")
            elif "problem" in exp or "problem_options" in exp:
                self.problem_select.value = name
                if name not in self.user_problems:
                    try:
                        self._build_problem_form(values=dict(exp.get("problem_options") or {}))
                    except (TypeError, ValueError) as exc:
                        bad.append(str(exc))
            opt = exp.get("optimizer", self.optimizer_select.value)
            if opt not in wb.optimizers.list():
                bad.append(f"optimizer {opt!r} is not one of the registered optimizers")
            elif "optimizer" in exp or "hparams" in exp:
                self.optimizer_select.value = opt
                self._build_hparam_form(values=dict(exp.get("hparams") or {}))
            for form, key in ((self.run_form, "run_options"), (self.schedule_form, "schedule")):
                for k, v in dict(exp.get(key) or {}).items():
                    if k in form.widgets:
                        form.widgets[k].value = "" if v is None else str(v)
            if "probes" in exp and isinstance(exp["probes"], dict):
                for pname, cb in self.probe_checks.items():
                    cb.value = pname in exp["probes"]
                    for k, v in dict(exp["probes"].get(pname) or {}).items():
                        if k in self.probe_forms[pname].widgets:
                            self.probe_forms[pname].widgets[k].value = str(v)
            if exp.get("device") and exp["device"] != self.device_select.value:
                try:
                    resolve_device(exp["device"])           # a link from a GPU machine, opened on a laptop
                except ValueError:
                    bad.append(f"device {exp['device']!r} is not available on this machine; kept "
                               f"{self.device_select.value!r}")
                else:
                    self.set_device(exp["device"])
        finally:
            self._applying = False
        self._controls_changed()
        self._show_error("Not applied from the link: " + "; ".join(bad) if bad else "")
        return s

    def sync_url(self, location=None) -> bool:
        """Keep the page's URL and the experiment in step (``pn.state.location``): a link with the query opens
        the same problem, optimizer, hyperparameters, schedule, run options, probes and device (what it carries
        that is unknown or unreadable is said in the error pane, the rest applied), and the URL follows every
        change of the experiment from then on. False where there is no location (plain Python).

        (Panel's own ``Location.sync`` re-encodes the other keys of the query as Python reprs on each update, so
        a link with two dicts in it could not be read back; the query is written whole here instead.)"""
        location = location if location is not None else getattr(pn.state, "location", None)
        if location is None:
            return False
        self._location = location
        exp, bad = parse_experiment_query(location.search)
        if exp or bad:
            self.apply_experiment(exp, unread=bad)
        self.session.param.watch(lambda *events: self._write_url(), list(URL_PARAMS))
        self._write_url()
        try:                    # the browser sends its own (bare) URL when the page opens: write it again then
            pn.state.onload(self._write_url)
        except Exception:  # not in a served session
            pass
        return True

    def _write_url(self):
        loc = getattr(self, "_location", None)
        if loc is None:
            return
        search = experiment_query(self.session)
        if loc.search != search:
            loc.search = search

    # -- hot swaps -----------------------------------------------------------------------------------------
    def _hparam_changed(self, name, value):
        if not self._live():
            self._controls_changed()
            return
        try:
            with self._quiet():
                self.session.swap(**{name: value})
        except ValueError as exc:
            self.hparam_form.show_error(name, str(exc))

    def _optimizer_changed(self):
        if self._applying:
            return
        keep = {}
        if self._live():
            try:
                keep = {"lr": self.hparam_form.values().get("lr", self.run.base_lr)}
            except ValueError:
                keep = {"lr": self.run.base_lr}
        self._build_hparam_form(values=keep)
        if self._live():
            try:
                hp = self.hparam_form.values()
                with self._quiet():
                    self._show_error(self.session.swap(optimizer=self.optimizer_select.value, **hp))
            except ValueError as exc:
                if not self.hparam_form.route_error(str(exc)):
                    self._show_error(str(exc))
        else:
            self._controls_changed()
