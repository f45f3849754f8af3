"""Sliders that recompute live in a kernel and still work on the static site.

One call serves both worlds::

    from prunekit import widgets

    def plot(sparsity):
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot(x, x ** (1 - sparsity))
        return fig

    widgets.slider(plot, [0.0, 0.5, 0.9, 0.99])

The returned object's MIME bundle carries

* ``application/vnd.jupyter.widget-view+json`` -- a live ipywidgets view (a
  ``SelectionSlider`` and an ``Output`` that re-renders ``fn(value)``). Jupyter,
  JupyterLab and Binder render this one, and the figure is recomputed by the
  kernel whenever the slider moves.
* ``text/html`` -- a self-contained slider over precomputed frames: every value is
  rendered once to a PNG (embedded as base64), plus an ``<input type="range">``
  with a one-line inline ``oninput`` handler that shows the chosen frame. No
  external script, no kernel. Without JavaScript the default frame is shown.
  The book's ``_config.yml`` ranks ``text/html`` first for the HTML builder, so
  the static site shows this slider.
* ``text/plain`` -- a one-line description.

Frames are rendered deterministically (fixed dpi, no "Software" metadata) and the
element ids derive from ``key`` or from a hash of the frames, so re-executing a
notebook does not change its stored ``text/html`` output.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import re
import traceback
from typing import Any, Callable, Iterable, Optional, Sequence, Union

__all__ = ["Slider", "slider", "render_png"]

#: Resolution of every rendered frame (dots per inch). Fixed so output is stable.
DPI = 100

_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _figure_from_result(result: Any, new_figs: Sequence[Any]):
    """Return the matplotlib Figure that ``fn`` produced."""
    from matplotlib.figure import Figure

    if isinstance(result, Figure):
        return result
    fig = getattr(result, "figure", None)  # an Axes (or artist) was returned
    if isinstance(fig, Figure):
        return fig
    if result is None and new_figs:
        return new_figs[-1]
    raise TypeError(
        "fn must return a matplotlib Figure (or an Axes, or draw on a new pyplot "
        f"figure and return None); got {type(result).__name__}"
    )


def render_png(fn: Callable[[Any], Any], value: Any, *, figsize=None, dpi: int = DPI) -> bytes:
    """Call ``fn(value)``, render the figure it returns to PNG bytes and close it.

    Every pyplot figure opened during the call is closed afterwards, so nothing
    leaks and the inline backend does not display a duplicate plot.
    """
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    # No rc_context here: if fn creates the session's first figure, IPython activates its
    # inline backend (rcParams["interactive"] = True) inside it, and leaving the context
    # would switch that off again, so later cells would silently stop showing figures.
    try:
        result = fn(value)
        new_figs = [plt.figure(n) for n in plt.get_fignums() if n not in before]
        fig = _figure_from_result(result, new_figs)
        if figsize is not None:
            fig.set_size_inches(figsize)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    finally:
        for n in plt.get_fignums():
            if n not in before:
                plt.close(n)
    if fig is not None and plt.fignum_exists(getattr(fig, "number", -1)):
        plt.close(fig)
    return buf.getvalue()


def _format_value(fmt: Union[str, Callable[[Any], str]], value: Any) -> str:
    if callable(fmt):
        return str(fmt(value))
    return fmt.format(value)


def _slug(text: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", str(text)).strip("-").lower()
    if not slug:
        raise ValueError(f"key must contain at least one letter or digit; got {text!r}")
    return slug


# Inline handler of the range input and of the choice menu: show frame
# choice * n + position, hide the others, update the label.
_ONINPUT = (
    "var r=this.closest('.pk-slider'),p=r.querySelector('.pk-slider-input'),"
    "c=r.querySelector('.pk-slider-choice'),n=+r.getAttribute('data-n'),"
    "i=(c?+c.value*n:0)+(+p.value),f=r.querySelectorAll('.pk-slider-frame');"
    "for(var k=0;k<f.length;k++){f[k].hidden=(k!==i);}"
    "var t=f[i].getAttribute('data-value');"
    "r.querySelector('.pk-slider-value').textContent=t;"
    "p.setAttribute('aria-valuetext',t);"
)

_STYLE = (
    ".pk-slider{margin:.5em 0}"
    ".pk-slider-controls{display:flex;align-items:center;gap:.75em;flex-wrap:wrap}"
    ".pk-slider-input{flex:0 1 18em;max-width:100%}"
    ".pk-slider-value{font-variant-numeric:tabular-nums;min-width:3em}"
    ".pk-slider-frame{max-width:100%;height:auto;display:block}"
    ".pk-slider [hidden]{display:none!important}"
)


class Slider:
    """A figure with a slider; see :func:`slider`.

    Attributes
    ----------
    values : list
        The slider positions.
    frames : list of bytes
        One PNG per value, rendered once when the slider is created.
    index : int
        Position of the default value in ``values``.
    id : str
        The deterministic HTML id of the static slider.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        values: Iterable[Any],
        *,
        label: str = "sparsity",
        default: Any = None,
        fmt: Union[str, Callable[[Any], str]] = "{:.0%}",
        key: Optional[str] = None,
        figsize: Optional[Sequence[float]] = None,
        choices: Optional[Iterable[Any]] = None,
        choice_label: str = "show",
        choice_default: Any = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable (value -> matplotlib Figure); got {type(fn).__name__}")
        if isinstance(values, (str, bytes)):
            raise TypeError("values must be a sequence of slider positions, not a string")
        try:
            values = list(values)
        except TypeError:
            raise TypeError(f"values must be an iterable of slider positions; got {type(values).__name__}") from None
        if not values:
            raise ValueError("values must not be empty")
        for i, v in enumerate(values):
            if any(_same(v, w) for w in values[:i]):
                raise ValueError(f"values must be distinct; {v!r} appears more than once")
        if default is None:
            index = 0
        else:
            matches = [i for i, v in enumerate(values) if _same(v, default)]
            if not matches:
                raise ValueError(f"default must be one of values {values!r}; got {default!r}")
            index = matches[0]
        if not isinstance(label, str):
            raise TypeError(f"label must be a str; got {type(label).__name__}")
        if not (isinstance(fmt, str) or callable(fmt)):
            raise TypeError(f"fmt must be a format string such as '{{:.0%}}' or a callable; got {type(fmt).__name__}")
        try:
            texts = [_format_value(fmt, v) for v in values]
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise ValueError(f"fmt {fmt!r} cannot format the values: {exc}") from None
        self.choices, self.choice_index = _check_choices(choices, choice_default)
        if not isinstance(choice_label, str):
            raise TypeError(f"choice_label must be a str; got {type(choice_label).__name__}")
        if figsize is not None:
            try:
                figsize = tuple(float(x) for x in figsize)
            except TypeError:
                raise TypeError(f"figsize must be a (width, height) pair in inches; got {figsize!r}") from None
            if len(figsize) != 2 or min(figsize) <= 0:
                raise ValueError(f"figsize must be a (width, height) pair of positive inches; got {figsize!r}")

        self.fn = fn
        self.values = values
        self.label = label
        self.fmt = fmt
        self.texts = texts
        self.index = index
        self.figsize = figsize
        self.choice_label = choice_label
        self.frames = [self._render(c, i) for c in range(len(self.choices or [None])) for i in range(len(values))]
        if key is not None:
            self.id = "pk-slider-" + _slug(key)
        else:
            h = hashlib.sha1(label.encode())
            for c in self.choices or []:
                h.update(str(c).encode())
            for text, frame in zip(texts * len(self.choices or [None]), self.frames):
                h.update(text.encode())
                h.update(frame)
            self.id = "pk-slider-" + h.hexdigest()[:12]
        self._widget = None

    def _render(self, choice: int, i: int) -> bytes:
        """PNG of ``fn(values[i])``, or ``fn(values[i], choices[choice])`` with choices."""
        if self.choices is None:
            return render_png(self.fn, self.values[i], figsize=self.figsize)
        return render_png(lambda v: self.fn(v, self.choices[choice]), self.values[i], figsize=self.figsize)

    def _frame(self, choice: int, i: int) -> int:
        return choice * len(self.values) + i

    # -- properties -----------------------------------------------------------------
    @property
    def default(self) -> Any:
        return self.values[self.index]

    # -- static HTML ----------------------------------------------------------------
    def to_html(self) -> str:
        """The self-contained static slider (HTML + inline CSS/JS, frames as base64)."""
        esc = html.escape
        n = len(self.values)
        ident = self.id
        shown = self._frame(self.choice_index, self.index)
        parts = [
            f'<div class="pk-slider" id="{ident}" data-n="{n}">',
            f"<style>{_STYLE}</style>",
            '<div class="pk-slider-controls">',
        ]
        if self.choices is not None:
            parts.append(f'<label for="{ident}-choice">{esc(self.choice_label)}</label>')
            parts.append(f'<select class="pk-slider-choice" id="{ident}-choice" onchange="{esc(_ONINPUT)}">')
            for c, choice in enumerate(self.choices):
                selected = " selected" if c == self.choice_index else ""
                parts.append(f'<option value="{c}"{selected}>{esc(str(choice))}</option>')
            parts.append("</select>")
        parts += [
            f'<label for="{ident}-input">{esc(self.label)}</label>',
            f'<input type="range" class="pk-slider-input" id="{ident}-input" '
            f'min="0" max="{n - 1}" step="1" value="{self.index}" '
            f'aria-valuetext="{esc(self.texts[self.index])}" oninput="{esc(_ONINPUT)}">',
            f'<output class="pk-slider-value" for="{ident}-input" aria-live="polite">'
            f"{esc(self.texts[self.index])}</output>",
            "</div>",
            '<div class="pk-slider-frames">',
        ]
        for i, frame in enumerate(self.frames):
            text = self.texts[i % n]
            alt = f"{self.label} = {text}"
            if self.choices is not None:
                alt = f"{self.choice_label} = {self.choices[i // n]}, {alt}"
            data = base64.b64encode(frame).decode("ascii")
            hidden = "" if i == shown else " hidden"
            parts.append(
                f'<img class="pk-slider-frame" id="{ident}-frame-{i}" '
                f'data-value="{esc(text)}" alt="{esc(alt)}"{hidden} '
                f'src="data:image/png;base64,{data}">'
            )
        parts += ["</div>", "</div>"]
        return "\n".join(parts)

    # -- live widget ----------------------------------------------------------------
    @property
    def widget(self):
        """The live ipywidgets view (created on first use): ``VBox([controls, output])``."""
        if self._widget is None:
            self._widget = self._make_widget()
        return self._widget

    def _make_widget(self):
        import ipywidgets as w

        options = list(zip(self.texts, range(len(self.values))))
        control = w.SelectionSlider(
            options=options,
            value=self.index,
            description=self.label,
            continuous_update=False,
            style={"description_width": "initial"},
            layout=w.Layout(width="min(100%, 28em)"),
        )
        menu = None
        if self.choices is not None:
            menu = w.Dropdown(options=[(str(c), k) for k, c in enumerate(self.choices)], value=self.choice_index,
                              description=self.choice_label, style={"description_width": "initial"})
        out = w.Output()
        first = self.frames[self._frame(self.choice_index, self.index)]
        out.outputs = (_png_output(first, self.texts[self.index], self.label),)

        def update(change):
            i, c = control.value, (menu.value if menu is not None else 0)
            try:
                png = self._render(c, i)
            except Exception as exc:  # show the error where the figure would be
                tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
                out.outputs = ({"output_type": "stream", "name": "stderr", "text": tb},)
                return
            out.outputs = (_png_output(png, self.texts[i], self.label),)

        control.observe(update, names="value")
        controls = [control]
        if menu is not None:
            menu.observe(update, names="value")
            controls = [w.HBox([menu, control])]
        box = w.VBox([*controls, out])
        box.add_class("pk-slider-widget")
        return box

    # -- display ----------------------------------------------------------------------
    def __repr__(self) -> str:
        extra = ""
        if self.choices is not None:
            extra = f" x {len(self.choices)} {self.choice_label} choices, {self.choices[self.choice_index]}"
        return (
            f"<prunekit slider: {self.label} over {len(self.values)} values "
            f"({self.texts[0]} .. {self.texts[-1]}){extra}, showing {self.texts[self.index]}>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def _repr_mimebundle_(self, include=None, exclude=None):
        widget = self.widget
        view = {"version_major": 2, "version_minor": 0, "model_id": widget.model_id}
        return {
            "text/plain": repr(self),
            "text/html": self.to_html(),
            _WIDGET_MIME: view,
        }


def _png_output(png: bytes, text: str, label: str) -> dict:
    return {
        "output_type": "display_data",
        "data": {
            "image/png": base64.b64encode(png).decode("ascii"),
            "text/plain": f"<Figure: {label} = {text}>",
        },
        "metadata": {},
    }


def _check_choices(choices: Optional[Iterable[Any]], default: Any) -> tuple[Optional[list], int]:
    """Validated ``choices`` (``None`` or a non-empty list of distinct items) and the default's index."""
    if choices is None:
        if default is not None:
            raise ValueError("choice_default needs choices")
        return None, 0
    if isinstance(choices, (str, bytes)):
        raise TypeError("choices must be a sequence of options (e.g. a list of names), not a string")
    try:
        choices = list(choices)
    except TypeError:
        raise TypeError(f"choices must be an iterable of options; got {type(choices).__name__}") from None
    if not choices:
        raise ValueError("choices must not be empty (pass None for a plain slider)")
    for i, c in enumerate(choices):
        if any(_same(c, d) for d in choices[:i]):
            raise ValueError(f"choices must be distinct; {c!r} appears more than once")
    if default is None:
        return choices, 0
    matches = [i for i, c in enumerate(choices) if _same(c, default)]
    if not matches:
        raise ValueError(f"choice_default must be one of choices {choices!r}; got {default!r}")
    return choices, matches[0]


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:  # e.g. numpy arrays
        return a is b


def slider(
    fn: Callable[[Any], Any],
    values: Iterable[Any],
    *,
    label: str = "sparsity",
    default: Any = None,
    fmt: Union[str, Callable[[Any], str]] = "{:.0%}",
    key: Optional[str] = None,
    figsize: Optional[Sequence[float]] = None,
    choices: Optional[Iterable[Any]] = None,
    choice_label: str = "show",
    choice_default: Any = None,
) -> Slider:
    """A figure with a slider that works live in Jupyter and statically on the site.

    Parameters
    ----------
    fn
        ``fn(value)`` draws one figure and returns it (a matplotlib ``Figure``; an
        ``Axes`` or ``None`` after drawing on a new pyplot figure also work). It is
        called once per value when the slider is created (the static frames), and
        again whenever the live slider moves. Figures it opens are closed.
    values
        The slider positions, e.g. ``[0.0, 0.5, 0.8, 0.9, 0.95]``. Keep the count
        modest (each value is one embedded PNG on the page; ~5-15 is a good range).
    label
        Text shown next to the slider and used in each frame's alt text.
    default
        The value shown first (and the only frame visible without JavaScript);
        must be one of ``values``. Defaults to ``values[0]``.
    fmt
        Format string (``"{:.0%}"`` -> ``"90%"``) or callable turning a value into
        its label.
    key
        Stable name for the HTML ids (``pk-slider-<key>``); give one when two sliders
        on a page could have identical frames. Default: a hash of the frames.
    figsize
        ``(width, height)`` in inches for every frame (default: the figure's own).
    choices
        Optional second control, a menu: with ``choices`` (e.g. criterion names),
        ``fn(value, choice)`` draws a frame and one frame is rendered per pair
        (``len(choices) * len(values)`` PNGs on the page). The static site gets a
        ``<select>`` beside the range input; the live view an ``ipywidgets.Dropdown``.
    choice_label
        Text next to the menu (and in each frame's alt text).
    choice_default
        The choice shown first; one of ``choices``. Defaults to ``choices[0]``.

    Returns
    -------
    Slider
        Display it (last expression of a cell, or ``IPython.display.display``).
    """
    return Slider(fn, values, label=label, default=default, fmt=fmt, key=key, figsize=figsize, choices=choices,
                  choice_label=choice_label, choice_default=choice_default)
