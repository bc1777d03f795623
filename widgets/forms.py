"""Widgets generated from :class:`workbench.params.Param` specs, with the validation error shown next to the
control (never raised into the server)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import panel as pn

from workbench.params import Param

from .safe import message_pane
from .safe import text as escape

__all__ = ["ParamForm", "format_value"]


def format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (tuple, list)):
        return ", ".join(format_value(e) for e in v)
    return str(v)


def _parse(p: Param, text: str):
    text = text.strip()
    if p.allow_none and text.lower() in ("", "none"):
        return None
    if p.kind == "float":
        try:
            return float(text)
        except ValueError:
            return text          # validation reports "must be a number"
    if p.kind == "int":
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
                return int(f) if f.is_integer() else f
            except ValueError:
                return text
    if p.kind == "floats":
        parts = [s for s in text.replace(";", ",").split(",") if s.strip()]
        try:
            return [float(s) for s in parts]
        except ValueError:
            return text
    return text


class ParamForm:
    """A column of widgets for ``specs``; ``values()`` returns validated values or raises ValueError (and shows
    every field's error beside it). ``on_change(callback)`` is called with (name, value) on valid edits."""

    def __init__(self, specs: Sequence[Param], owner: str, values: dict | None = None, css_prefix: str = "wb",
                 css_class: str | None = None):
        self.specs = list(specs)
        self.owner = owner
        self.widgets: dict[str, Any] = {}
        self.errors: dict[str, pn.pane.HTML] = {}      # HTML panes: the message (with the typed text) escaped
        self.messages: dict[str, str] = {}             # the same messages as plain text
        self._callbacks: list[Callable[[str, Any], None]] = []
        values = values or {}
        rows = []
        for p in self.specs:
            v = values.get(p.name, p.default)
            tip = f"{p.doc} ({p.range_text()})" if p.doc else p.range_text()
            name = p.name + (" (log)" if p.log else "")
            if p.kind == "bool":
                w = pn.widgets.Checkbox(label=p.name, value=bool(v), css_classes=[f"{css_prefix}-param-{p.name}"])
            elif p.kind == "choice":
                w = pn.widgets.Select(label=p.name, options=list(p.choices), value=v,
                                      css_classes=[f"{css_prefix}-param-{p.name}"])
            else:
                w = pn.widgets.TextInput(label=name, value=format_value(v), placeholder=p.range_text(),
                                         css_classes=[f"{css_prefix}-param-{p.name}"])
            w.description = tip
            err = message_pane(["wb-error", f"{css_prefix}-error-{p.name}"], margin=(0, 10))
            w.param.watch(lambda ev, p=p: self._changed(p), "value")
            self.widgets[p.name] = w
            self.errors[p.name] = err
            rows += [w, err]
        self.layout = pn.Column(*rows, sizing_mode="stretch_width", margin=0,
                                css_classes=[css_class] if css_class else [])

    def on_change(self, cb: Callable[[str, Any], None]) -> None:
        self._callbacks.append(cb)

    def _raw(self, p: Param):
        w = self.widgets[p.name]
        return w.value if p.kind in ("bool", "choice") else _parse(p, w.value)

    def _check(self, p: Param):
        try:
            value = p.validate(self._raw(p), self.owner)
        except ValueError as exc:
            self.show_error(p.name, str(exc))
            return False, None
        self.show_error(p.name, "")
        return True, value

    def _changed(self, p: Param):
        ok, value = self._check(p)
        if ok:
            for cb in self._callbacks:
                cb(p.name, value)

    def show_error(self, name: str, message: str) -> None:
        if name in self.errors:
            self.messages[name] = str(message)
            self.errors[name].object = escape(message)
            self.errors[name].visible = bool(message)

    def values(self) -> dict:
        out, bad = {}, []
        for p in self.specs:
            ok, value = self._check(p)
            if ok:
                out[p.name] = value
            else:
                bad.append(self.messages[p.name])
        if bad:
            raise ValueError(bad[0])
        return out

    def route_error(self, message: str) -> bool:
        """Show a (cross-field) error beside the field it names; True if one matched."""
        for p in self.specs:
            if message.startswith(p.name) or f".{p.name}" in message or f" {p.name}=" in message \
                    or message.startswith(f"{p.name}="):
                self.show_error(p.name, message)
                return True
        return False
