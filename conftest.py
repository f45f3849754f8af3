"""pytest at the repository root: the deprecated re-export shims (old module paths, see
``prunekit/_shim.py``) are not collected for doctests, since importing them warns by design;
``tests/test_layering.py`` checks that they warn and forward."""

from prunekit._shim import DEPRECATED_MODULES

collect_ignore = [f"prunekit/{old.replace('.', '/')}.py" for old in DEPRECATED_MODULES]
