"""The experiment between the dashboard's controls, its session and the page's URL (a mixin of
``widgets.dashboard.Dashboard``): a control that changes moves the session to whatever is valid now; a session set
from outside (a shared link, code) fills the controls; ``sync_url`` ties the session to ``pn.state.location``, so a
link with the query reopens the same problem, optimizer, hyperparameters, schedule, run options, probes and device.
Values a link carries that are unknown or unreadable are said in the error pane and not applied. While a run is
live, a changed hyperparameter or optimizer is a hot swap of that run instead."""
from __future__ import annotations

import contextlib

import panel as pn

import workbench as wb

__all__ = ["URL_PARAMS", "LinkMixin"]

#: session parameter -> URL query key (``Dashboard.sync_url``): a link reopens the same experiment
URL_PARAMS = {"problem": "problem", "problem_options": "options", "optimizer": "optimizer", "hparams": "hp",
              "schedule": "schedule", "run_options": "run", "probes": "probes", "device": "device"}


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

    def apply_experiment(self, exp: dict) -> None:
        """Fill the controls from an experiment dict (the session's parameters; any subset). Unknown names and
        values are said in the error pane and skipped; the rest is applied."""
        s = self.session
        self._applying = True
        bad = []
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
                    self.set_device(exp["device"])
                except ValueError as exc:
                    bad.append(str(exc))
        finally:
            self._applying = False
        self._controls_changed()
        self._show_error("Not applied from the link: " + "; ".join(bad) if bad else "")
        return s

    def sync_url(self, location=None) -> bool:
        """Keep the page's URL and the experiment in step (``pn.state.location``): a link with the query opens
        the same problem, optimizer, hyperparameters, run options and probes. False where there is no location
        (plain Python)."""
        location = location if location is not None else getattr(pn.state, "location", None)
        if location is None:
            return False
        location.sync(self.session, URL_PARAMS, on_error=lambda mapped: self._show_error(
            "Not applied from the link: the values for " + ", ".join(sorted(mapped)) + " could not be read"))
        return True

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
