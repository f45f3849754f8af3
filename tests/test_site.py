"""The built site: it builds with zero warnings, loads nothing from third parties,
shows no JavaScript errors in a browser, renders math with the vendored MathJax, and its
sliders move without a kernel.

The book is built once per session with ``jupyter-book build . -W`` into a temporary
directory. The browser tests need Chromium (Debian's ``/usr/bin/chromium``, or the path in
``$CHROMIUM``); without it they are skipped, except under CI (``CI=true``), where that is a
failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.site

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# every chapter page: (path, the start of its <h1>)
CHAPTERS = {"book/01_introduction.html": "1. Introduction", "book/02_speedup.html": "2. Universal or specific speedup",
            "book/03_when.html": "3. When to prune", "book/04_1_criteria.html": "4.1. Pruning criteria",
            "book/04_2_learning.html": "4.2. Learning to prune", "book/05_fusion.html": "5. Fusion",
            "book/06_contrasts.html": "6. The eight contrast settings",
            "book/07_1_llm.html": "7.1. Pruning language models"}
INTRO = "book/intro.html"
# every page of the book (path, the start of its <h1> without tags): chapters are numbered
PAGES = {INTRO: "Pruning, hands-on", **CHAPTERS,
         "book/04_how.html": "4. How to prune",
         "book/07_emerging.html": "7. Emerging topics",
         "book/api.html": "prunekit API reference",
         "book/notation.html": "Notation", "book/teachers.html": "For teachers"}
SCREENSHOTS = Path(os.environ.get("PK_SCREENSHOTS", ROOT / "_build" / "screenshots"))
# <link rel=...> values that make the browser fetch something
LOADING_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "shortcut", "manifest",
                "apple-touch-icon", "dns-prefetch", "preconnect", "mask-icon"}


def _jupyter_book() -> list[str]:
    exe = Path(sys.executable).with_name("jupyter-book")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("jupyter-book")
    if found:
        return [found]
    pytest.fail("jupyter-book is not installed (pip install -r requirements.txt)")


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """Build the book once (``jupyter-book build . -W``); return the html directory."""
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, MPLBACKEND="Agg")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(
        _jupyter_book() + ["build", str(ROOT), "-W", "--path-output", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    if proc.returncode != 0:
        pytest.fail(f"jupyter-book build . -W failed (exit {proc.returncode}):\n"
                    f"{proc.stdout[-8000:]}\n{proc.stderr[-8000:]}", pytrace=False)
    html = out / "_build" / "html"
    assert (html / "index.html").exists(), proc.stdout[-4000:]
    return html


# ---------------------------------------------------------------------------------------
# static checks of the built HTML


class _Refs(HTMLParser):
    """Every URL a page makes the browser load (scripts, styles, icons, images, frames)."""

    def __init__(self):
        super().__init__()
        self.loads: list[tuple[str, str]] = []  # (tag, url)
        self.scripts: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src"):
            self.loads.append((tag, a["src"]))
            self.scripts.append(a["src"])
        elif tag == "link" and a.get("href"):
            rels = set((a.get("rel") or "").lower().split())
            if rels & LOADING_RELS:
                self.loads.append((tag, a["href"]))
        elif tag in ("img", "iframe", "audio", "video", "source", "embed") and a.get("src"):
            self.loads.append((tag, a["src"]))


def _refs(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _is_third_party(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") or url.startswith("//")


def _text(html: str) -> str:
    return unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", html)).strip())


def _h1(path: Path) -> str:
    """The article's heading (the one with a permalink; the page header repeats the title)."""
    h1s = re.findall(r"<h1>(.*?)</h1>", path.read_text(encoding="utf-8"), re.S)
    return _text(next(h for h in h1s if "headerlink" in h))


def test_pages_exist_and_chapters_are_numbered(site):
    for page in (*PAGES, "index.html", "search.html"):
        assert (site / page).is_file(), page
    for page, title in PAGES.items():
        assert _h1(site / page).startswith(title), (page, _h1(site / page))


def test_exercises_are_numbered_within_their_chapter(site):
    for page, title in CHAPTERS.items():
        chapter = title.split(".")[0]
        numbers = re.findall(r"Exercise (\d+)\.(\d+)", (site / page).read_text(encoding="utf-8"))
        assert numbers, page
        assert {c for c, _ in numbers} == {chapter}, (page, numbers)


class _Text(HTMLParser):
    """Text of a page outside code, math and scripts, one entry per block element."""

    SKIP = {"script", "style", "pre", "code", "mjx-container", "svg"}
    BLOCKS = {"p", "li", "td", "th", "dd", "dt", "h1", "h2", "h3", "h4", "figcaption"}

    def __init__(self):
        super().__init__()
        self.blocks: list[str] = []
        self._skip = 0
        self._math = 0
        self._open = 0
        self._buf: list[str] = []

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag in self.SKIP:
            self._skip += 1
        elif "math" in classes:
            self._math += 1
        if tag in self.BLOCKS:
            self._flush()

    def handle_endtag(self, tag):
        if tag in self.SKIP and self._skip:
            self._skip -= 1
        if tag in self.BLOCKS:
            self._flush()

    def handle_data(self, data):
        if not self._skip:
            self._buf.append(data)

    def _flush(self):
        text = "".join(self._buf).strip()
        if text:
            self.blocks.append(text)
        self._buf = []


def test_tables_and_math_render(site):
    """Markdown built in code renders as tables and math, never as raw pipes or dollars
    (myst-nb parses text/markdown outputs as CommonMark unless told otherwise)."""
    bad = []
    for page in sorted(site.rglob("*.html")):
        html = page.read_text(encoding="utf-8")
        for p in re.findall(r"<p>(.*?)</p>", html, re.S):
            text = _text(p)
            if text.startswith("|") and re.search(r"\|\s*:?-{3,}:?\s*\|", text):
                bad.append(f"{page.relative_to(site)}: unrendered table: {text[:80]}")
        parser = _Text()
        parser.feed(re.sub(r'<(span|div) class="math[^"]*">.*?</\1>', "", html, flags=re.S))
        for block in parser.blocks:
            if re.search(r"\$[^$\s][^$]*\\[a-zA-Z]+[^$]*\$|\$\S[^$]*\$", block) and "\\" in block:
                bad.append(f"{page.relative_to(site)}: raw math: {block[:80]}")
            if re.search(r"(^|\s)\|[^|]+\|[^|]+\|", block) and "---" in block:
                bad.append(f"{page.relative_to(site)}: raw table row: {block[:80]}")
    assert not bad, "\n".join(bad)


def test_rendered_tables_exist(site):
    """The result tables the chapters build in code are real <table>s in the output."""
    for page in ("book/04_1_criteria.html", "book/04_2_learning.html"):
        html = (site / page).read_text(encoding="utf-8")
        tables = re.findall(r'<div class="cell_output docutils container">.*?</div>\s*</div>', html, re.S)
        assert sum("<table" in t for t in tables) >= 3, page


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])


def test_internal_links_resolve(site):
    """Every link between pages (the taxonomy figure's raw HTML links included) reaches an
    existing page and anchor."""
    parsed = {}

    def parse(path):
        if path not in parsed:
            p = _Links()
            p.feed(path.read_text(encoding="utf-8"))
            parsed[path] = p
        return parsed[path]

    broken = []
    for page in sorted((site / "book").glob("*.html")):
        for href in parse(page).hrefs:
            parts = urlsplit(href)
            if parts.scheme or href.startswith("//") or href.startswith("mailto:"):
                continue
            target = (page.parent / parts.path).resolve() if parts.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page.name}: {href} (no such file)")
            elif parts.fragment and target.suffix == ".html" and parts.fragment not in parse(target).ids:
                broken.append(f"{page.name}: {href} (no such anchor)")
    assert not broken, "broken internal links:\n" + "\n".join(broken)


def test_no_dead_launch_or_repository_buttons(site):
    """While repository.url is unset the site shows no repository, Binder or Colab button."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import set_repository

    if set_repository.repository_url():
        pytest.skip("a repository address is set")
    for page in CHAPTERS:
        html = (site / page).read_text(encoding="utf-8")
        assert "mybinder.org" not in html and "colab.research.google.com" not in html, page
        assert "repository-button" not in html and 'title="Source repository"' not in html, page


def test_launch_buttons_follow_the_repository_setting():
    """The book's Sphinx extension adds Binder and Colab buttons when, and only when, the
    repository address is set."""
    sys.path.insert(0, str(ROOT / "book" / "_ext"))
    import pruning_book

    class Config:
        def __init__(self, url):
            self.html_theme_options = {"repository_url": url, "use_repository_button": False,
                                       "launch_buttons": {"notebook_interface": "jupyterlab"}}

    unset = Config("")
    pruning_book._launch_buttons(None, unset)
    assert unset.html_theme_options["launch_buttons"] == {}
    assert unset.html_theme_options["use_repository_button"] is False
    assert "repository_url" not in unset.html_theme_options
    set_ = Config("https://github.com/someone/pruning-hands-on")
    pruning_book._launch_buttons(None, set_)
    launch = set_.html_theme_options["launch_buttons"]
    assert launch["binderhub_url"] == "https://mybinder.org"
    assert launch["colab_url"] == "https://colab.research.google.com"
    assert launch["notebook_interface"] == "jupyterlab"
    assert set_.html_theme_options["use_repository_button"] is True


def test_bibliography_labels_match_citations(site):
    """Citations read "(Han et al., 2015)"; the bibliography's labels read the same way."""
    html = (site / "book" / "01_introduction.html").read_text(encoding="utf-8")
    labels = re.findall(r'<span class="label"><span class="fn-bracket">\[</span>(.*?)<span', html)
    assert labels, "no bibliography on the chapter"
    for label in map(_text, labels):
        assert re.fullmatch(r"[^\W\d][\w\- ']*( & [\w\- ']+| et al\.)?, \d{4}[a-z]?", label), label


def test_no_third_party_resources(site):
    offenders = []
    for page in sorted(site.rglob("*.html")):
        for tag, url in _refs(page).loads:
            if _is_third_party(url):
                offenders.append(f"{page.relative_to(site)}: <{tag}> {url}")
    assert not offenders, "pages load third-party resources:\n" + "\n".join(offenders)


def test_mathjax_is_vendored(site):
    scripts = _refs(site / INTRO).scripts
    mathjax = [s for s in scripts if "mathjax" in s.lower() or "tex-" in s]
    assert mathjax, f"no MathJax script on the landing page: {scripts}"
    for src in mathjax:
        assert not _is_third_party(src), src
        local = (site / "book" / src.split("?")[0]).resolve()
        assert local.is_file(), f"{src} is not in the built site"
    fonts = list((site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))
    assert len(fonts) > 10


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_chapter_shows_static_slider_not_widget_view(site, chapter):
    text = (site / chapter).read_text(encoding="utf-8")
    assert 'class="pk-slider"' in text
    assert "application/vnd.jupyter.widget-view+json" not in text
    assert "widgets/dist" not in text and "require.js" not in text  # no widget JS


def test_no_widget_state_embedded(site):
    """Saved ipywidgets state would be embedded in the page (a second copy of every
    slider's default frame, plus every widget model of the session), for nothing: the site
    shows the static sliders."""
    offenders = [str(p.relative_to(site)) for p in sorted(site.rglob("*.html"))
                 if "application/vnd.jupyter.widget-state+json" in p.read_text(encoding="utf-8")]
    assert not offenders, (
        f"pages embed saved ipywidgets state: {offenders}. Re-execute those notebooks with "
        "`make notebooks NB=book/<name>.ipynb` (stores no widget state), or delete "
        "metadata.widgets from the .ipynb.")


# ---------------------------------------------------------------------------------------
# browser tests


@pytest.fixture(scope="session")
def server(site):
    """Serve the built site on 127.0.0.1 (ephemeral port)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser():
    missing = None
    if not Path(CHROMIUM).exists():
        missing = f"Chromium not found at {CHROMIUM} (apt-get install -y chromium, or set $CHROMIUM)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed (pip install -r requirements.txt)"
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{missing}; CI=true, so the browser test must run", pytrace=False)
        pytest.skip(missing)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class PageLog:
    """Everything that went wrong while a page loaded."""

    def __init__(self, base: str):
        self.base_host = urlsplit(base).hostname
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.requests: list[str] = []

    def attach(self, context, page):
        def route(r):
            url = r.request.url
            host = urlsplit(url).hostname
            if urlsplit(url).scheme in ("http", "https") and host != self.base_host:
                self.foreign.append(url)
                return r.abort()
            return r.continue_()

        context.route("**/*", route)
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"console: {m.text} @ {m.location}"))
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.errors.append(f"request failed: {r.url} {r.failure}"))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("response", lambda r: r.status >= 400 and self.errors.append(f"HTTP {r.status}: {r.url}"))


def _open(browser, server, path, **context_args):
    context = browser.new_context(**context_args)
    page = context.new_page()
    log = PageLog(server)
    log.attach(context, page)
    page.goto(f"{server}/{path}", wait_until="load")
    return context, page, log


def _wait_for_mathjax(page, log):
    try:
        page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                               timeout=20000)
        page.evaluate("() => MathJax.startup.promise")
    except Exception as exc:  # report why (e.g. MathJax requested from a CDN)
        pytest.fail(f"MathJax did not start: {exc}\nrequests that left 127.0.0.1: {log.foreign}\n"
                    f"errors: {log.errors}", pytrace=False)


def _assert_clean(page, log):
    page.wait_for_load_state("networkidle")
    assert not log.foreign, "requests left 127.0.0.1:\n" + "\n".join(log.foreign)
    assert not log.errors, "console errors / failed requests:\n" + "\n".join(log.errors)
    for url in log.requests:
        parts = urlsplit(url)
        assert parts.scheme in ("data", "blob", "about") or parts.hostname == log.base_host, url


def _visible_frames(page):
    return page.eval_on_selector_all(
        ".pk-slider .pk-slider-frame",
        "fs => fs.map((f, i) => [i, !f.hidden && getComputedStyle(f).display !== 'none', f.naturalWidth])",
    )


def test_landing_page_renders_math_offline(browser, server):
    context, page, log = _open(browser, server, INTRO)
    try:
        _wait_for_mathjax(page, log)
        assert page.locator("mjx-container").count() >= 2
        assert page.locator("mjx-merror").count() == 0  # no TeX errors
        # the CommonHTML fonts came from the vendored copy
        assert any("/_static/mathjax/output/chtml/fonts/woff-v2/" in u for u in log.requests)
        # citations resolved to the page's bibliography
        assert page.locator("a[href^='#id']").count() >= 5
        _assert_clean(page, log)
    finally:
        context.close()


def _slider_state(page, slider, first: int, n: int):
    """(visible frame index within the slider, its src, the label text); exactly one is visible."""
    frames = [(i - first, v, w) for i, v, w in _visible_frames(page)[first:first + n] if v]
    assert len(frames) == 1, f"exactly one frame must be visible: {frames}"
    i, _, natural_width = frames[0]
    assert natural_width > 0, "visible frame did not decode"
    src = slider.locator(".pk-slider-frame").nth(i).get_attribute("src")
    return i, src, slider.locator(".pk-slider-value").inner_text().strip()


def _expected_frame(slider) -> int:
    """choice * (frames per choice) + slider position, as the page's handler computes it."""
    per_choice = int(slider.get_attribute("data-n"))
    value = int(slider.locator(".pk-slider-input").input_value())
    menu = slider.locator(".pk-slider-choice")
    return (int(menu.input_value()) if menu.count() else 0) * per_choice + value


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_chapter_slider_moves_without_kernel(browser, server, chapter):
    context, page, log = _open(browser, server, chapter)
    try:
        _wait_for_mathjax(page, log)
        sliders = page.locator(".pk-slider")
        assert sliders.count() >= 1
        first = 0
        for k in range(sliders.count()):  # every slider on the page
            slider = sliders.nth(k)
            inp = slider.locator(".pk-slider-input")
            n = slider.locator(".pk-slider-frame").count()
            assert n >= 3
            state = lambda: _slider_state(page, slider, first, n)  # noqa: E731

            i0, src0, text0 = state()
            assert i0 == _expected_frame(slider)

            # move it like a reader: keyboard (from the first position, so there is a next one)
            inp.evaluate("(el) => { el.value = 0; el.dispatchEvent(new Event('input', {bubbles: true})); }")
            i0, src0, text0 = state()
            inp.focus()
            page.keyboard.press("ArrowRight")
            i1, src1, text1 = state()
            assert i1 == i0 + 1 == _expected_frame(slider) and src1 != src0 and text1 != text0
            alt = slider.locator(".pk-slider-frame").nth(i1).get_attribute("alt")
            assert alt.endswith(text1)
            assert inp.get_attribute("aria-valuetext") == text1

            # a menu of choices (if any) switches to that choice's frames, keeping the position
            menu = slider.locator(".pk-slider-choice")
            if menu.count():
                options = menu.locator("option").count()
                assert options * int(slider.get_attribute("data-n")) == n
                target = (int(menu.input_value()) + 1) % options
                menu.select_option(str(target))
                i2, src2, text2 = state()
                assert i2 == _expected_frame(slider) == target * int(slider.get_attribute("data-n")) + 1
                assert src2 != src1 and text2 == text1
                alt = slider.locator(".pk-slider-frame").nth(i2).get_attribute("alt")
                assert menu.locator("option").nth(target).inner_text().strip() in alt
            first += n
        _assert_clean(page, log)
    finally:
        context.close()


@pytest.mark.parametrize("chapter", list(CHAPTERS))
def test_slider_default_frame_without_javascript(browser, server, chapter):
    context, page, log = _open(browser, server, chapter, java_script_enabled=False)
    try:
        slider = page.locator(".pk-slider").first
        frames = slider.locator(".pk-slider-frame")
        visible = [i for i in range(frames.count()) if frames.nth(i).is_visible()]
        default = int(slider.locator(".pk-slider-input").get_attribute("value"))
        chosen = slider.locator(".pk-slider-choice option[selected]")
        if chosen.count():  # the menu's default choice, read from the markup (no JavaScript here)
            default += int(chosen.get_attribute("value")) * int(slider.get_attribute("data-n"))
        assert visible == [default]
        assert not log.foreign
    finally:
        context.close()


@pytest.mark.parametrize("page", list(PAGES))
def test_page_fits_phone_and_desktop(browser, server, page):
    """At 390 px (a phone) the page never scrolls sideways: wide tables, outputs and
    equations scroll in their own box. At 1280 px figures are shown at (nearly) the size
    they were drawn, so their 11 pt text stays >= 10 pt. Screenshots of both widths are
    saved (PK_SCREENSHOTS, default _build/screenshots/) for a person to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width, height in ((1280, 900), (390, 844)):
        context, pg, log = _open(browser, server, page, viewport={"width": width, "height": height})
        try:
            if pg.locator("script[src*='mathjax']").count():   # pages with math load MathJax
                _wait_for_mathjax(pg, log)
            pg.wait_for_load_state("networkidle")
            overflow = pg.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth")
            culprits = pg.evaluate("""() => {
                const w = document.documentElement.clientWidth, out = [];
                for (const el of document.querySelectorAll('.bd-article *')) {
                    const r = el.getBoundingClientRect();
                    if (r.right > w + 1 && getComputedStyle(el).position !== 'fixed')
                        out.push(el.tagName + '.' + el.className + ' right=' + Math.round(r.right));
                }
                return out.slice(0, 5);
            }""")
            assert overflow <= 0, f"{page} at {width} px scrolls sideways by {overflow} px: {culprits}"
            if width == 1280:
                small = pg.evaluate("""() => Array.from(document.querySelectorAll(
                        '.bd-article .cell_output img, .bd-article .pk-slider-frame'))
                    .filter(i => i.naturalWidth > 0 && i.getBoundingClientRect().width > 0)
                    .filter(i => i.getBoundingClientRect().width < 0.9 * Math.min(i.naturalWidth, 700))
                    .map(i => Math.round(i.getBoundingClientRect().width) + '/' + i.naturalWidth)""")
                assert not small, f"{page}: figures shrunk below 90% of their drawn size: {small}"
            name = page.replace("/", "_").removesuffix(".html")
            pg.screenshot(path=str(SCREENSHOTS / f"{name}_{width}.png"), full_page=True)
            _assert_clean(pg, log)
        finally:
            context.close()
