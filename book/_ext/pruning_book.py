"""Sphinx extension of the book (loaded through ``sphinx: local_extensions`` in _config.yml).

* **One repository setting.** ``repository.url`` in ``_config.yml`` is the only place the
  book's repository address lives. While it is empty the site shows no repository, Binder
  or Colab button (they would lead nowhere) and the build says so once. When it is set,
  the repository button and the Binder and Colab launch buttons appear. The notebooks'
  set-up cell (which installs prunekit in Colab, Binder or a downloaded notebook) is
  rewritten from the same setting by ``scripts/set_repository.py``; a test keeps the two
  in step.
* **One citation style.** Citations read "(Han et al., 2015)" and the bibliography's
  labels read the same way ("Han et al., 2015"), instead of alpha labels ("[HPTD15]").
"""

from __future__ import annotations

from collections import Counter

from pybtex.plugin import register_plugin
from pybtex.style.formatting.unsrt import Style as UnsrtStyle
from pybtex.style.labels import BaseLabelStyle
from sphinx.application import Sphinx
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: Launch services offered when the repository address is set.
LAUNCH_SERVICES = {"binderhub_url": "https://mybinder.org",
                   "colab_url": "https://colab.research.google.com"}


def _surname(person) -> str:
    return " ".join(str(part) for part in person.prelast_names + person.last_names).replace("{", "").replace("}", "")


#: {bib key: label} over every bibliography file, so that two papers with the same first
#: author and year get "…, 2020a" and "…, 2020b" on every page (labels must be unique
#: across the project, not only within one page's list). Filled by _global_labels.
GLOBAL_LABELS: dict[str, str] = {}


class AuthorYearLabels(BaseLabelStyle):
    """Labels such as "Han et al., 2015", "Frankle & Carbin, 2019" (a, b for repeats)."""

    @staticmethod
    def base(entry) -> str:
        people = entry.persons.get("author") or entry.persons.get("editor") or []
        year = entry.fields.get("year", "n.d.")
        if not people:
            return f"{entry.fields.get('title', entry.key)[:20]}, {year}"
        names = [_surname(p) for p in people]
        if len(names) == 1:
            who = names[0]
        elif len(names) == 2:
            who = f"{names[0]} & {names[1]}"
        else:
            who = f"{names[0]} et al."
        return f"{who}, {year}"

    def format_labels(self, sorted_entries):
        for entry in sorted_entries:
            yield GLOBAL_LABELS.get(entry.key) or self.base(entry)


def _global_labels(app: Sphinx, config) -> None:
    from pathlib import Path

    from pybtex.database import parse_file

    entries = {}
    for bibfile in config.bibtex_bibfiles:
        entries.update(parse_file(str(Path(app.confdir) / bibfile)).entries)
    bases = {key: AuthorYearLabels.base(e) for key, e in sorted(entries.items())}
    counts, seen = Counter(bases.values()), Counter()
    for key, base in bases.items():   # sorted by key: suffixes do not depend on the page
        if counts[base] > 1:
            seen[base] += 1
            base += "abcdefghijklmnopqrstuvwxyz"[seen[base] - 1]
        GLOBAL_LABELS[key] = base


class AuthorYearStyle(UnsrtStyle):
    default_label_style = AuthorYearLabels


register_plugin("pybtex.style.formatting", "authoryear", AuthorYearStyle)


def _launch_buttons(app: Sphinx, config) -> None:
    options = config.html_theme_options
    url = (options.get("repository_url") or "").strip()
    if not url:
        options["use_repository_button"] = False
        options["launch_buttons"] = {}
        options.pop("repository_url", None)
        logger.info("\nno repository address is set (repository.url in _config.yml): the site "
                    "shows no repository, Binder or Colab button.", color="darkgreen")
        return
    launch = dict(options.get("launch_buttons") or {})
    for key, value in LAUNCH_SERVICES.items():
        launch.setdefault(key, value)
    options["launch_buttons"] = launch
    options["use_repository_button"] = True


def setup(app: Sphinx) -> dict:
    app.connect("config-inited", _launch_buttons, priority=900)
    app.connect("config-inited", _global_labels)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
