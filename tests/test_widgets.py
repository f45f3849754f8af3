"""prunekit.widgets: one slider, a live ipywidgets view and a static HTML fallback."""

import base64
import re
from html.parser import HTMLParser

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from prunekit import widgets  # noqa: E402

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
VALUES = [0.0, 0.5, 0.9]


def bars(sparsity):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(["kept", "pruned"], [1 - sparsity, sparsity])
    ax.set_ylim(0, 1)
    return fig


class _Frames(HTMLParser):
    """Collects the slider's elements from the static HTML."""

    def __init__(self):
        super().__init__()
        self.frames, self.inputs, self.wrappers, self.outputs, self.scripts = [], [], [], [], []
        self._in_output = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "img" and "pk-slider-frame" in classes:
            self.frames.append(a)
        if tag == "input" and "pk-slider-input" in classes:
            self.inputs.append(a)
        if "pk-slider" in classes:
            self.wrappers.append(a)
        if tag == "script":
            self.scripts.append(a)
        if "pk-slider-value" in classes:
            self._in_output = True
            self.outputs.append("")

    def handle_endtag(self, tag):
        if tag == "output":
            self._in_output = False

    def handle_data(self, data):
        if self._in_output:
            self.outputs[-1] += data


def parse(html):
    p = _Frames()
    p.feed(html)
    return p


def test_bundle_has_three_mime_types():
    bundle = widgets.slider(bars, VALUES)._repr_mimebundle_()
    assert {"text/plain", "text/html", WIDGET_MIME} <= set(bundle)
    view = bundle[WIDGET_MIME]
    assert view["version_major"] == 2 and re.fullmatch(r"[0-9a-f]+", view["model_id"])
    assert "sparsity" in bundle["text/plain"] and "3 values" in bundle["text/plain"]


def test_static_html_structure():
    s = widgets.slider(bars, VALUES, default=0.5)
    p = parse(s._repr_mimebundle_()["text/html"])
    assert len(p.wrappers) == 1 and p.wrappers[0]["id"] == s.id
    assert len(p.frames) == len(VALUES)
    assert len(p.inputs) == 1
    inp = p.inputs[0]
    assert inp["type"] == "range" and (inp["min"], inp["max"], inp["value"]) == ("0", "2", "1")
    assert "oninput" in inp
    # no external scripts at all (the handler is inline)
    assert all("src" not in a for a in p.scripts)
    # default frame visible, the others hidden; each with alt text and a PNG
    visible = [i for i, f in enumerate(p.frames) if "hidden" not in f]
    assert visible == [1]
    assert [f["alt"] for f in p.frames] == ["sparsity = 0%", "sparsity = 50%", "sparsity = 90%"]
    for f in p.frames:
        assert f["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(f["src"].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert p.outputs == ["50%"]


def test_default_is_first_value():
    s = widgets.slider(bars, VALUES)
    p = parse(s.to_html())
    assert [i for i, f in enumerate(p.frames) if "hidden" not in f] == [0]
    assert s.default == 0.0


def test_ids_and_html_are_deterministic():
    a = widgets.slider(bars, VALUES)._repr_mimebundle_()["text/html"]
    b = widgets.slider(bars, VALUES)._repr_mimebundle_()["text/html"]
    assert a == b
    ids = re.findall(r'id="([^"]+)"', a)
    assert ids and all(not re.search(r"[0-9a-f]{32}", i) for i in ids)


def test_key_sets_ids():
    s = widgets.slider(bars, VALUES, key="Chapter 1: bars")
    assert s.id == "pk-slider-chapter-1-bars"
    assert 'id="pk-slider-chapter-1-bars-frame-2"' in s.to_html()


def test_different_functions_give_different_ids():
    a = widgets.slider(bars, VALUES)
    b = widgets.slider(lambda v: bars(v / 2), VALUES)
    assert a.id != b.id


def test_frames_differ_by_value():
    s = widgets.slider(bars, VALUES)
    assert len(set(s.frames)) == len(VALUES)


def test_figures_are_closed():
    plt.close("all")
    s = widgets.slider(bars, VALUES)
    s._repr_mimebundle_()
    assert plt.get_fignums() == []


def test_fn_may_return_axes_or_draw_on_new_figure():
    def axes(v):
        _, ax = plt.subplots()
        ax.plot([0, 1], [0, v])
        return ax

    def draws(v):
        plt.figure()
        plt.plot([0, 1], [0, v])

    for fn in (axes, draws):
        s = widgets.slider(fn, [0.1, 0.2])
        assert len(s.frames) == 2 and s.frames[0] != s.frames[1]
    assert plt.get_fignums() == []


def test_figsize_and_fmt():
    s = widgets.slider(bars, [1, 2], fmt="{} rounds", label="rounds", figsize=(2, 1))
    assert s.texts == ["1 rounds", "2 rounds"]
    png = s.frames[0]
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (2 * widgets.DPI, 1 * widgets.DPI)
    s2 = widgets.slider(lambda v: bars(int(v[0]) / 4), ["2:4", "3:4"], fmt=lambda v: f"N:M = {v}")
    assert s2.texts == ["N:M = 2:4", "N:M = 3:4"]


def test_live_widget_recomputes():
    calls = []

    def fn(v):
        calls.append(v)
        return bars(v)

    s = widgets.slider(fn, VALUES)
    assert calls == VALUES
    box = s.widget
    control, out = box.children
    assert [label for label, _ in control.options] == ["0%", "50%", "90%"]
    assert out.outputs[0]["data"]["image/png"] == base64.b64encode(s.frames[0]).decode()
    control.value = 2  # what moving the slider does in a kernel
    assert calls[-1] == 0.9
    assert out.outputs[0]["data"]["image/png"] == base64.b64encode(s.frames[2]).decode()
    assert plt.get_fignums() == []


def test_live_widget_shows_errors():
    def fn(v):
        if v > 0.6:
            raise RuntimeError("boom")
        return bars(v)

    s = widgets.slider(fn, [0.1, 0.5])
    s.fn = lambda v: fn(0.9)
    control, out = s.widget.children
    control.value = 1
    assert out.outputs[0]["output_type"] == "stream" and "boom" in out.outputs[0]["text"]


@pytest.mark.parametrize(
    "kwargs, exc, word",
    [
        (dict(fn=bars, values=[]), ValueError, "values"),
        (dict(fn=bars, values=VALUES, default=0.3), ValueError, "default"),
        (dict(fn="not callable", values=VALUES), TypeError, "fn"),
        (dict(fn=bars, values=5), TypeError, "values"),
        (dict(fn=bars, values="abc"), TypeError, "values"),
        (dict(fn=bars, values=[0.1, 0.1]), ValueError, "distinct"),
        (dict(fn=bars, values=["a", "b"]), ValueError, "fmt"),
        (dict(fn=bars, values=VALUES, fmt=3), TypeError, "fmt"),
        (dict(fn=bars, values=VALUES, figsize=(1, 0)), ValueError, "figsize"),
        (dict(fn=bars, values=VALUES, key="!!"), ValueError, "key"),
        (dict(fn=lambda v: 42, values=VALUES), TypeError, "Figure"),
    ],
)
def test_bad_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        widgets.slider(kwargs.pop("fn"), kwargs.pop("values"), **kwargs)
    assert plt.get_fignums() == []


def test_rendering_frames_keeps_settings_fn_changes():
    """IPython switches interactive mode on when the session's first figure is created; if that
    happens inside a slider's fn, it must stay on, or later cells stop showing figures."""
    import matplotlib
    import matplotlib.pyplot as plt

    from prunekit import widgets

    was = matplotlib.is_interactive()
    matplotlib.interactive(False)

    def first_figure(value):
        matplotlib.interactive(True)  # what IPython's backend activation does
        return plt.figure()

    try:
        widgets.slider(first_figure, [0.1, 0.2], figsize=(2, 1))
        assert matplotlib.is_interactive()
    finally:
        matplotlib.interactive(was)


def bars_for(sparsity, who):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(["kept", "pruned"], [1 - sparsity, sparsity], color="C0" if who == "a" else "C1")
    ax.set_title(who)
    return fig


def test_choices_render_one_frame_per_pair_and_show_the_default():
    s = widgets.slider(bars_for, VALUES, choices=["a", "b"], choice_label="criterion", choice_default="b",
                       default=0.5, key="pairs")
    assert len(s.frames) == 6
    html = s.to_html()
    p = parse(html)
    assert len(p.frames) == 6
    visible = [i for i, f in enumerate(p.frames) if "hidden" not in f]
    assert visible == [1 * len(VALUES) + 1]  # choice b, value 0.5
    assert p.frames[4]["alt"] == "criterion = b, sparsity = 50%"
    assert p.wrappers[0]["data-n"] == "3"
    options = re.findall(r'<option value="(\d)"( selected)?>(\w)</option>', html)
    assert options == [("0", "", "a"), ("1", " selected", "b")]
    # frame (choice, value) is fn(value, choice): same value, other choice -> other picture
    assert s.frames[0] != s.frames[3] and s.frames[3] == widgets.render_png(lambda v: bars_for(v, "b"), 0.0)


def test_choices_live_widget_follows_menu_and_slider():
    s = widgets.slider(bars_for, VALUES, choices=["a", "b"])
    box = s.widget
    menu, control = box.children[0].children
    out = box.children[1]
    first = out.outputs[0]["data"]["image/png"]
    menu.value = 1
    after_menu = out.outputs[0]["data"]["image/png"]
    assert after_menu != first
    assert base64.b64decode(after_menu) == s.frames[3]
    control.value = 2
    assert base64.b64decode(out.outputs[0]["data"]["image/png"]) == s.frames[5]


@pytest.mark.parametrize("kwargs, exc, word", [
    ({"choices": "ab"}, TypeError, "choices"),
    ({"choices": []}, ValueError, "choices"),
    ({"choices": ["a", "a"]}, ValueError, "distinct"),
    ({"choices": ["a"], "choice_default": "z"}, ValueError, "choice_default"),
    ({"choice_default": "a"}, ValueError, "choice_default"),
    ({"choices": ["a"], "choice_label": 3}, TypeError, "choice_label"),
])
def test_bad_choice_arguments(kwargs, exc, word):
    with pytest.raises(exc, match=word):
        widgets.slider(bars_for, VALUES, **kwargs)
