"""Channel rules: how each operation moves, couples or blocks channels.

A *rule* is a function ``rule(tr, node, args) -> segments`` called by
:class:`prunekit.core.graph.tracer.ChannelTracer` for an fx node: ``tr`` is the tracer
(its helpers: ``tr.info[a]`` the segments of an input, ``tr.shape(n)``, ``tr.cd(n)`` the
channel dim, ``tr.passthrough``, ``tr.producer``, ``tr.consumer``, ``tr.barrier``,
``tr.union``), ``node`` the node and ``args`` its tensor inputs that carry channels. It
returns the segments of the node's output (see :mod:`prunekit.core.graph.spaces`), or
``tr.barrier(node, args, why)`` when the channels cannot pass.

Rules are found by a registry keyed on what the node calls: a module type (looked up
along the module's MRO, so a subclass inherits its base's rule), a function object, or a
tensor method name; or by name (a module class or function name) for libraries
prunekit does not import. :func:`register_rule` adds one, as Torch-Pruning's
``register_customized_layer`` does. The built-in rules live one module per construct
family (:mod:`.conv_linear`, :mod:`.norm`, :mod:`.elementwise`, :mod:`.reshape`,
:mod:`.permute`, :mod:`.index_split`, :mod:`.cat_add`, :mod:`.gate`, :mod:`.attention`);
each rule's docstring states what it does, and ``tests/core/test_graph_rules.py`` tests it.

A node with no rule is a barrier: the channels that reach it are kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import fx, nn

__all__ = ["Rule", "register_rule", "unregister_rule", "lookup", "registry_version"]


@dataclass(frozen=True)
class Rule:
    """A registered rule. ``single_input`` (modules only): the dispatcher sends a call with
    more than one tensor input to a barrier before calling ``fn``. ``multi_output``: ``fn``
    also handles nodes that return several tensors (chunk, attention)."""

    fn: Callable
    single_input: bool = True
    multi_output: bool = False


_MODULES: dict[type, Rule] = {}
_MODULE_NAMES: dict[str, Rule] = {}
_FUNCTIONS: dict[object, Rule] = {}
_FUNCTION_NAMES: dict[str, Rule] = {}
_METHODS: dict[str, Rule] = {}
_VERSION = [0]


def registry_version() -> int:
    """Bumped by every (un)registration: cached analyses made before it are not reused."""
    return _VERSION[0]


def _table(key: object, kind: str | None) -> tuple[dict, object]:
    if kind is None:
        kind = "module" if isinstance(key, type) else "method" if isinstance(key, str) else "function"
    if kind == "module":
        if isinstance(key, type):
            if not issubclass(key, nn.Module):
                raise TypeError(f"a module rule's key must be an nn.Module subclass, got {key.__name__}")
            return _MODULES, key
        if isinstance(key, str):
            return _MODULE_NAMES, key
    elif kind == "function":
        if isinstance(key, str):
            return _FUNCTION_NAMES, key
        if callable(key):
            return _FUNCTIONS, key
    elif kind == "method":
        if isinstance(key, str):
            return _METHODS, key
    else:
        raise ValueError(f"kind must be None, 'module', 'function' or 'method', got {kind!r}")
    raise TypeError(f"cannot register a {kind} rule under {key!r} ({type(key).__name__}): use a module type or "
                    "class name (kind='module'), a function or function name (kind='function'), or a method "
                    "name (kind='method')")


def register_rule(keys, fn: Callable | None = None, *, kind: str | None = None, single_input: bool = True,
                  multi_output: bool = False, replace: bool = False):
    """Register ``fn`` as the channel rule for ``keys`` (one key or a tuple/list of keys).

    A key is a module type (``kind`` inferred ``"module"``), a function object
    (``"function"``) or a tensor method name (a ``str``: ``"method"``); with
    ``kind="module"`` or ``kind="function"`` a string is a class or function *name*.
    Registering a key that already has a rule raises ``ValueError`` unless ``replace=True``.
    Without ``fn``, returns a decorator.

    >>> import torch, torch.nn as nn
    >>> class Scale(nn.Module):                  # y = x * s, per channel
    ...     def __init__(self, c): super().__init__(); self.s = nn.Parameter(torch.ones(c, 1, 1))
    ...     def forward(self, x): return x * self.s
    >>> @register_rule(Scale)
    ... def scale(tr, node, args):
    ...     \"\"\"Scale keeps its input's channels; ``s`` is sliced with them.\"\"\"
    ...     tr.member_param(f"{node.target}.s", 0, args[0])
    ...     return tr.passthrough(node, args[0])
    >>> unregister_rule(Scale)
    """
    if fn is None:
        return lambda f: register_rule(keys, f, kind=kind, single_input=single_input,
                                       multi_output=multi_output, replace=replace) or f
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    rule = Rule(fn, single_input, multi_output)
    entries = [_table(k, kind) for k in (keys if isinstance(keys, (tuple, list)) else (keys,))]
    taken = [k for t, k in entries if k in t and not replace]
    if taken:
        raise ValueError(f"a channel rule is already registered for {taken!r}; pass replace=True to replace it")
    for t, k in entries:
        t[k] = rule
    _VERSION[0] += 1
    return None


def unregister_rule(keys, *, kind: str | None = None) -> None:
    """Remove the rules of ``keys`` (see :func:`register_rule`); unknown keys raise ``KeyError``."""
    for k in keys if isinstance(keys, (tuple, list)) else (keys,):
        t, k = _table(k, kind)
        del t[k]
    _VERSION[0] += 1


def lookup(node: fx.Node, modules: dict[str, nn.Module]) -> Rule | None:
    """The rule for ``node``, or ``None``."""
    if node.op == "call_module":
        m = modules[node.target]
        for t in type(m).__mro__:
            if t in _MODULES:
                return _MODULES[t]
        return _MODULE_NAMES.get(type(m).__name__)
    if node.op == "call_function":
        try:
            r = _FUNCTIONS.get(node.target)
        except TypeError:
            r = None
        return r if r is not None else _FUNCTION_NAMES.get(getattr(node.target, "__name__", None))
    if node.op == "call_method":
        return _METHODS.get(node.target)
    return None


def _register_builtins() -> None:
    from . import attention, cat_add, conv_linear, elementwise, gate, index_split, norm, permute, reshape  # noqa: F401


_register_builtins()
