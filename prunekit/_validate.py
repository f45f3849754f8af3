"""Every argument check of prunekit, and the validated request of one masking call.

Each check raises ``TypeError`` for a wrong type and ``ValueError`` for a wrong value,
naming the argument and what is allowed, and returns the value in canonical form. Numbers
are accepted by their abstract type (:class:`numbers.Integral`, :class:`numbers.Real`, so
NumPy scalars and :class:`fractions.Fraction` work); ``bool`` is never a number here.

Checks are split as in ``torch.nn.utils.prune`` (``_validate_pruning_amount_init`` vs
``_validate_pruning_amount``): *argument* checks run once at the boundary of a public call,
before any criterion runs or anything is modified, and their result is a frozen
:class:`MaskRequest`; internals take the request and never check again. Checks *against a
tensor* (the scores a criterion returned) run once, when the tensor exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["check_model", "check_materialised", "check_int", "check_number", "check_nonneg", "check_positive",
           "check_fraction", "check_sparsity", "check_choice", "check_scope", "check_names", "check_bool",
           "check_scores", "resolve_sparsity", "check_coupled", "SCOPES", "MaskRequest",
           "mask_request"]

#: The scopes of :func:`prunekit.make_masks`: rank all tensors together, or each on its own.
SCOPES = ("global", "layer")


def _short(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters (a 400-digit int stays readable)."""
    r = repr(value)
    return r if len(r) <= limit else r[:limit - 3] + "..."


# --- models ------------------------------------------------------------------------------

def check_model(model: Any, arg: str = "model") -> nn.Module:
    """``model`` itself, if it is an ``nn.Module``; ``TypeError`` otherwise."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{arg} must be a torch.nn.Module, got {type(model).__name__}")
    return model


def check_materialised(model: Any, *, allow_meta: bool = False) -> nn.Module:
    """``model`` itself, if it is an ``nn.Module`` whose parameters and buffers all exist.

    ``ValueError`` for an uninitialised lazy module (``nn.LazyLinear`` before its first
    forward pass: no shape yet) and, unless ``allow_meta``, for tensors on the meta device
    (shapes but no values, e.g. a model built under ``torch.device("meta")``). Only reads
    the model.
    """
    check_model(model)
    for kind, named in (("parameter", model.named_parameters()), ("buffer", model.named_buffers())):
        for name, t in named:
            if nn.parameter.is_lazy(t):
                raise ValueError(f"model has an uninitialised (lazy) {kind} {name!r} (e.g. nn.LazyLinear before its "
                                 f"first forward pass): run one forward pass on a real batch first, so that its "
                                 f"shape is known")
            if t.is_meta and not allow_meta:
                raise ValueError(f"model has {kind} {name!r} on the meta device (a shape without values): "
                                 f"materialise the model first, e.g. model.to_empty(device='cpu') and then "
                                 f"load_state_dict(...)")
    return model


# --- numbers -----------------------------------------------------------------------------

def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (either bound optional).

    Any :class:`numbers.Integral` is accepted (``numpy.int64`` too); ``bool`` is not.

    >>> check_int("steps", 3, minimum=1)
    3
    >>> check_int("seed", -1, minimum=0)
    Traceback (most recent call last):
    ...
    ValueError: seed must be an int >= 0, got -1
    """
    what = "an int" + ("" if minimum is None else f" >= {minimum}") + ("" if maximum is None else f" <= {maximum}")
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be {what}, got {_short(value)}")
    v = int(value)
    if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
        raise ValueError(f"{name} must be {what}, got {_short(value)}")
    return v


def check_number(name: str, value: Any, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, what: str | None = None) -> float:
    """``value`` as a finite ``float`` in the interval given by ``low``/``high``.

    ``low_open``/``high_open`` exclude the bound. ``what`` replaces the description of the
    allowed values in the message (default: the interval). Any :class:`numbers.Real` is
    accepted; ``bool``, strings, complex numbers and tensors are a ``TypeError``; NaN, an
    infinity or a value outside the interval a ``ValueError``.
    """
    if what is None:
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        what = ("a finite number" if low is None and high is None
                else f"a number in {lo}{'-inf' if low is None else f'{low:g}'}, "
                     f"{'inf' if high is None else f'{high:g}'}{hi}")
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be {what}, got {_short(value)} of type {type(value).__name__}")
    try:
        v = float(value)
    except (OverflowError, ValueError):
        v = math.nan
    ok = math.isfinite(v)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        raise ValueError(f"{name} must be {what}, got {_short(value)}")
    return v


def check_nonneg(name: str, value: Any) -> float:
    """``value`` as a finite float >= 0."""
    return check_number(name, value, low=0.0, what="a finite number >= 0")


def check_positive(name: str, value: Any) -> float:
    """``value`` as a finite float > 0."""
    return check_number(name, value, low=0.0, low_open=True, what="a finite number > 0")


def check_fraction(name: str, value: Any, *, include_one: bool = False) -> float:
    """``value`` as a float in [0, 1) (or [0, 1] with ``include_one``)."""
    return check_number(name, value, low=0.0, high=1.0, high_open=not include_one)


def check_sparsity(sparsity: object, arg: str = "sparsity") -> float:
    """A fraction of weights to remove, in [0, 1): ``TypeError`` for a non-number (bools,
    strings, complex numbers, tensors), ``ValueError`` for NaN, infinities and any value
    outside [0, 1) (also one too large for a float).

    >>> check_sparsity(0.5), check_sparsity(0)
    (0.5, 0.0)
    """
    return check_number(arg, sparsity, low=0.0, high=1.0, high_open=True,
                        what="a number in [0, 1) (the fraction of weights removed)"
                        if isinstance(sparsity, bool) or not isinstance(sparsity, Real)
                        else "in [0, 1) (the fraction of weights removed)")


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {_short(value)}")
    return value


# --- names and choices -------------------------------------------------------------------

def check_choice(name: str, value: Any, choices: Sequence[str], *, allow_none: bool = False) -> str | None:
    """``value`` lower-cased and stripped, if it is one of ``choices`` (case-insensitive).

    >>> check_choice("reduction", " L2", ("l1", "l2"))
    'l2'
    """
    if value is None and allow_none:
        return None
    extra = " or None" if allow_none else ""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be one of {list(choices)}{extra} (a string), got {type(value).__name__}")
    key = value.strip().lower()
    if key not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}{extra} (case-insensitive), got {value!r}")
    return key


def check_scope(scope: object) -> str:
    """``"global"`` or ``"layer"``, case-insensitive like criterion and granularity names."""
    return check_choice("scope", scope, SCOPES)


def check_names(name: str, value: Any) -> list[str]:
    """A string or an iterable of strings, as a list (``TypeError`` otherwise)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Iterable) or isinstance(value, (bytes, Mapping, torch.Tensor)):
        raise TypeError(f"{name} must be a name or a list of names (strings), got {type(value).__name__}")
    out = list(value)
    bad = [v for v in out if not isinstance(v, str)]
    if bad:
        raise TypeError(f"{name} must contain names (strings), got {_short(bad[0])}")
    return out


# --- scores and sparsity -----------------------------------------------------------------

def check_scores(scores: object, arg: str = "scores") -> dict[str, torch.Tensor]:
    """A non-empty ``{name: real tensor}`` without NaN, as a dict."""
    if not isinstance(scores, Mapping):
        raise TypeError(f"{arg} must be a dict {{param_name: tensor}}, got {type(scores).__name__}")
    if not scores:
        raise ValueError(f"{arg} is empty: nothing to prune")
    for name, s in scores.items():
        if not isinstance(s, torch.Tensor):
            raise TypeError(f"{arg}[{name!r}] must be a torch.Tensor, got {type(s).__name__}")
        if s.is_complex() or s.dtype == torch.bool:
            raise TypeError(f"{arg}[{name!r}] must be a real-valued tensor, got dtype {s.dtype}")
        if s.numel() == 0:
            raise ValueError(f"{arg}[{name!r}] is empty")
        if s.is_meta:
            raise ValueError(f"{arg}[{name!r}] is on the meta device and has no values (was the model built "
                             f"on the meta device? load its weights first)")
        if s.is_floating_point() and torch.isnan(s).any():
            raise ValueError(f"{arg}[{name!r}] contains NaN")
    return dict(scores)


def resolve_sparsity(names: list[str], sparsity: object, scope: str, *, what: str = "the scored parameters",
                     dict_scope_error: str = "a per-layer sparsity dict needs scope='layer'") -> dict[str, float]:
    """One validated fraction per name: the same number for all, or a ``{name: fraction}`` dict.

    A dict needs ``scope="layer"`` and must name exactly ``names`` (``what`` says what
    they are in the message).

    >>> resolve_sparsity(["a", "b"], 0.5, "global")
    {'a': 0.5, 'b': 0.5}
    """
    if isinstance(sparsity, Mapping):
        if scope != "layer":
            raise ValueError(dict_scope_error)
        bad = [k for k in sparsity if not isinstance(k, str)]
        if bad:
            raise TypeError(f"sparsity dict keys must be parameter names (strings), got {_short(bad[0])}")
        missing = set(names) - set(sparsity)
        extra = set(sparsity) - set(names)
        if missing or extra:
            raise ValueError(f"sparsity dict must name exactly {what}; "
                             f"missing {sorted(missing)}, unknown {sorted(extra)}")
        return {n: check_sparsity(sparsity[n], f"sparsity[{n!r}]") for n in names}
    s = check_sparsity(sparsity)
    return {n: s for n in names}


# --- prune's coupled switch ---

def check_coupled(g: Any, coupled: object, example_inputs: object) -> bool:
    """Whether :func:`prunekit.prune` takes the coupled-channel path, for the parsed granularity ``g``
    (``coupled=None``: exactly for ``"channel"`` with ``example_inputs``)."""
    if coupled is None:
        return g.kind == "channel" and example_inputs is not None
    if not isinstance(coupled, bool):
        raise TypeError(f"coupled must be True, False or None (automatic), got {coupled!r}")
    if coupled and g.kind != "channel":
        raise ValueError(f"coupled=True prunes coupled channel groups: it needs granularity='channel', "
                         f"got granularity={g.name!r}")
    if coupled and example_inputs is None:
        raise ValueError("coupled=True traces the model to find coupled channels: pass example_inputs= (a batch "
                         "the model accepts)")
    return coupled


# --- the request -------------------------------------------------------------------------

@dataclass(frozen=True)
class MaskRequest:
    """One validated masking call; built once, before any criterion runs, read by the internals.

    * ``granularity`` -- the parsed granularity object (:mod:`prunekit.granularity`);
    * ``sparsity`` -- the fraction removed per *pool*: per parameter name, or (heads) per
      attention module, or (layers) ``{"model": s}``; granularities that fix it (N:M) or
      bound it (pattern) have checked it already;
    * ``scope`` -- ``"global"`` or ``"layer"``; ``reduction`` -- resolved (the granularity's
      default when it has one, ``None`` when it reduces nothing);
    * ``shapes`` -- the parameter shape of every name that will be masked;
    * ``model`` -- the model, when the granularity finds its units there (heads, layers);
    * ``units`` -- what the granularity found in the model (attention modules, blocks).
    """

    granularity: Any
    sparsity: Mapping[str, float]
    scope: str
    reduction: str | None
    shapes: Mapping[str, tuple[int, ...]]
    model: nn.Module | None = None
    units: tuple = field(default=())

    @property
    def normalise(self) -> bool:
        """Whether unit scores are normalised by the unit size (units of different layers compete)."""
        return self.scope == "global"


def mask_request(granularity: Any, sparsity: object, scope: object, reduction: object,
                 shapes: Mapping[str, Sequence[int]], model: nn.Module | None = None) -> MaskRequest:
    """Check every argument of a masking call once and return the frozen :class:`MaskRequest`.

    ``granularity`` is a parsed granularity object (:func:`prunekit.granularity.parse`),
    ``shapes`` the parameter shape of every name to be masked, ``model`` the model
    (required by granularities whose units are found in it). The checks run in this order:
    the sparsity number (N:M fixes it, pattern bounds it), the scope, the reduction, each
    parameter's shape, the units in the model, then a sparsity dict against the pools.
    """
    g = granularity
    number = None
    if not isinstance(sparsity, Mapping) and not (sparsity is None and g.fixed_sparsity() is not None):
        number = check_sparsity(sparsity)
        g.check_sparsity_value(number, sparsity)
    scope = check_scope(scope)
    g.check_scope(scope)
    reduction = g.reduction(reduction)
    shapes = {n: tuple(int(d) for d in s) for n, s in shapes.items()}
    for n, s in shapes.items():
        g.check_applicable(n, s)
    units: tuple = ()
    if g.needs_model:
        if model is None:
            raise ValueError(f"granularity {g.name!r} finds its units in the model: pass the model, "
                             f"make_masks(scores, sparsity, {g.name!r}, model=model) (formerly shapes=model)")
        units = g.find_units(model, list(shapes))
    pools = g.pools(list(shapes), units)
    if number is not None:
        per = {p: number for p in pools}
    else:
        per = g.resolve_sparsity(pools, sparsity, scope)
    return MaskRequest(g, per, scope, reduction, shapes, model, units)
