"""The one place the dashboard turns text into markup.

Every piece of text a visitor types (a value, a file name) or that comes from a file (a record's attributes: problem,
optimizer, status, config strings, events) reaches the browser through one of these, so it is shown literally and
never runs:

* :func:`text` — for HTML panes (status line, error and file messages, pins list, notes): ``&``, ``<``, ``>``,
  ``"`` and ``'`` become entities. A :class:`Markup` (markup this module built, or fixed markup of the app) passes
  unchanged, so escaping twice is harmless.
* :func:`html` — a template of trusted markup whose ``{}`` fields are filled with escaped values.
* :func:`plot_text` — for strings inside plotly figures (trace names, titles, annotations): plotly renders a subset
  of HTML there (``<b>``, ``<a href>``, ...) and decodes ``&lt;`` ``&gt;`` ``&amp;``, so ``<``, ``>`` and ``&`` are
  escaped (plotly has no ``&quot;``: quotes stay as they are, and are harmless there).

The message panes are HTML panes (:func:`message_pane`): a Markdown pane would pass raw HTML through and also read
``*``, ``_``, backticks and ``$`` in a visitor's text as formatting.
"""
from __future__ import annotations

import html as _html
from typing import Any

__all__ = ["Markup", "text", "html", "plot_text", "message_pane"]


class Markup(str):
    """A string that is already safe markup (escaped text, or the app's own fixed markup)."""

    __slots__ = ()

    def __add__(self, other):
        return Markup(str.__add__(self, text(other)))

    def __radd__(self, other):
        return Markup(str.__add__(text(other), self))


def text(value: Any) -> Markup:
    """``value`` as text that an HTML pane shows literally (a :class:`Markup` is returned unchanged)."""
    if isinstance(value, Markup):
        return value
    return Markup(_html.escape(str(value), quote=True))


def html(template: str, *args: Any, **kwargs: Any) -> Markup:
    """``template`` (trusted markup, e.g. ``"Viewing <b>{}</b>"``) with every field escaped by :func:`text`."""
    return Markup(template.format(*(text(a) for a in args), **{k: text(v) for k, v in kwargs.items()}))


def plot_text(value: Any) -> str:
    """``value`` for a plotly string (trace name, title, annotation), shown literally."""
    return _html.escape(str(value), quote=False)


def message_pane(css_classes=(), color: str | None = "#b00020", **kwargs):
    """An (initially hidden) HTML pane for messages set through :func:`text` / :func:`html`."""
    import panel as pn

    styles = {"font-size": "12px", **({"color": color} if color else {}), **kwargs.pop("styles", {})}
    return pn.pane.HTML("", visible=kwargs.pop("visible", False), css_classes=list(css_classes), styles=styles,
                        sizing_mode=kwargs.pop("sizing_mode", "stretch_width"), **kwargs)
