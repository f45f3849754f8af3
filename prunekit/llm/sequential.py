"""The sequential driver: prune a decoder-only LM block by block from calibration sequences.

As in the reference code of SparseGPT (``opt_sequential``/``llama_sequential``) and Wanda
(``prune_wanda``/``prune_sparsegpt``): the inputs of the first decoder block are captured on
the calibration sequences (with everything the model passes to it: attention mask, position
ids or rotary embeddings); then, for each block in order, the inputs of its ``nn.Linear``
layers are collected with forward hooks while the block runs on the current hidden states,
the Linears are pruned layer-wise (:mod:`.layerwise`), and the *pruned* block is run again to
produce the hidden states the next block is calibrated on. Only one block's statistics are in
memory at a time: the running Hessian ``2 XᵀX / N`` (SparseGPT) or the squared input norms
(Wanda) per Linear, not the inputs themselves.

Within a block, SparseGPT's reference offers ``--true-sequential``: Linears that read the same
tensor (q/k/v; gate/up) form a group, and each group is calibrated on the outputs of the groups
before it, already pruned; Wanda's reference captures all Linears of the block at once, from
the block before any of them is pruned. ``true_sequential=None`` follows each reference
(SparseGPT: on, as the paper's sequential procedure; Wanda: off). The groups are found
generically, from which Linears receive the very same input tensor.
"""

from __future__ import annotations

from numbers import Real
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .._validate import check_bool, check_choice, check_int, check_model
from .layerwise import (_sparsegpt_from_hessian, _wanda_from_norms, _work_dtype, check_linear, check_pattern,
                        check_sparsegpt_args, magnitude_prune_layer)

__all__ = ["prune_sequential", "find_blocks", "METHODS"]

METHODS = ("magnitude", "wanda", "sparsegpt")

#: Where Hugging Face causal LMs keep their decoder blocks (LLaMA/Mistral/Qwen, OPT, GPT-NeoX, Falcon/Bloom).
BLOCK_PATHS = ("model.layers", "model.decoder.layers", "gpt_neox.layers", "transformer.h", "transformer.blocks",
               "layers", "blocks")


class _Stop(Exception):
    """Raised by the hook on the first block once its inputs are recorded (the rest is not needed)."""


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks of ``model``: the first of :data:`BLOCK_PATHS` that is a non-empty ``nn.ModuleList``."""
    for path in BLOCK_PATHS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList) and len(obj):
            return obj
    raise ValueError(f"found no decoder blocks in {type(model).__name__} (looked for an nn.ModuleList at "
                     f"{', '.join(BLOCK_PATHS)}); pass blocks=<the nn.ModuleList of blocks>")


def _linears(block: nn.Module) -> dict[str, nn.Linear]:
    return {name: m for name, m in block.named_modules() if isinstance(m, nn.Linear)}


def _check_tokens(calib_tokens: Any, nsamples: Any) -> torch.Tensor:
    if not isinstance(calib_tokens, torch.Tensor):
        raise TypeError(f"calib_tokens must be an integer torch.Tensor [nsamples, seq_len], "
                        f"got {type(calib_tokens).__name__}")
    if calib_tokens.is_floating_point() or calib_tokens.is_complex() or calib_tokens.dtype == torch.bool:
        raise TypeError(f"calib_tokens must hold integer token ids, got dtype {calib_tokens.dtype}")
    if calib_tokens.dim() != 2 or calib_tokens.shape[0] < 1 or calib_tokens.shape[1] < 1:
        raise ValueError(f"calib_tokens must have shape [nsamples, seq_len] with both >= 1, "
                         f"got {list(calib_tokens.shape)}")
    n = calib_tokens.shape[0] if nsamples is None else check_int("nsamples", nsamples, minimum=1,
                                                                  maximum=calib_tokens.shape[0])
    return calib_tokens[:n]


def _block_sparsities(sparsity: Any, n_blocks: int, prunen: int, prunem: int) -> list[Any]:
    if isinstance(sparsity, (Sequence, torch.Tensor)) and not isinstance(sparsity, str):
        values = [float(v) if isinstance(v, torch.Tensor) else v for v in sparsity]
        if len(values) != n_blocks:
            raise ValueError(f"sparsity as a sequence must give one value per decoder block ({n_blocks}), "
                             f"got {len(values)}")
        if prunem:
            raise ValueError("sparsity must be None (or 1 - prunen/prunem) with N:M, not one value per block")
        return values
    if sparsity is not None and not isinstance(sparsity, Real):
        raise TypeError(f"sparsity must be a number in [0, 1), a sequence of them (one per block) or None with N:M, "
                        f"got {type(sparsity).__name__}")
    return [sparsity] * n_blocks


class _Stats:
    """Running input statistics of one Linear, averaged as the references do (the scale cancels anyway)."""

    def __init__(self, layer: nn.Linear, method: str):
        self.method, self.n = method, 0
        dt, dev, k = _work_dtype(layer.weight), layer.weight.device, layer.in_features
        self.acc = torch.zeros((k, k) if method == "sparsegpt" else (k,), dtype=dt, device=dev)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(self.acc.dtype)
        t = x.shape[0]
        self.acc *= self.n / (self.n + t)
        self.n += t
        if self.method == "sparsegpt":
            self.acc += (2.0 / self.n) * (x.T @ x)                 # H = 2 XᵀX / N
        else:
            self.acc += x.pow(2).sum(dim=0) / self.n              # ||X_j||² / N


def _run(block: nn.Module, batch: tuple[torch.Tensor, tuple, dict]) -> torch.Tensor:
    hidden, args, kwargs = batch
    out = block(hidden, *args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def _capture_first_inputs(model: nn.Module, first: nn.Module, tokens: torch.Tensor, batch_size: int,
                          forward: Callable[[nn.Module, torch.Tensor], Any] | None) -> list:
    """``[(hidden, other args, kwargs)]`` that ``model`` passes to its first block, one per batch."""
    batches: list = []

    def hook(_module, args, kwargs):
        if args:
            hidden, rest = args[0], tuple(args[1:])
        else:
            kwargs = dict(kwargs)
            hidden, rest = kwargs.pop("hidden_states"), ()
        batches.append((hidden.detach(), rest, dict(kwargs)))
        raise _Stop

    handle = first.register_forward_pre_hook(hook, with_kwargs=True)
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    if use_cache is not None:
        config.use_cache = False
    try:
        for b in range(0, tokens.shape[0], batch_size):
            try:
                (forward or (lambda m, ids: m(ids)))(model, tokens[b:b + batch_size])
            except _Stop:
                pass
            else:
                raise ValueError("the model's forward pass never called the first decoder block; pass blocks= "
                                 "(the nn.ModuleList the forward pass goes through)")
    finally:
        handle.remove()
        if use_cache is not None:
            config.use_cache = use_cache
    return batches


def _groups(block: nn.Module, linears: dict[str, nn.Linear], batch: tuple) -> list[list[str]]:
    """The block's Linears in call order, grouped by the input tensor they read (q/k/v; gate/up).

    The inputs are kept alive until they are compared: a freed tensor's memory can be reused by a
    later one, so comparing addresses of tensors that are gone would group unrelated layers (and
    differently from run to run)."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, lin in linears.items():
        def hook(_m, inp, _out, name=name):
            if name not in seen:
                seen[name] = inp[0]
        handles.append(lin.register_forward_hook(hook))
    try:
        _run(block, batch)
    finally:
        for h in handles:
            h.remove()
    groups: list[list[str]] = []
    keys: list[tuple] = []
    for name, x in seen.items():                                 # dict order = first call order
        key = (x.data_ptr(), tuple(x.shape), x.stride())
        if key in keys:
            groups[keys.index(key)].append(name)
        else:
            keys.append(key)
            groups.append([name])
    return groups + [[n] for n in linears if n not in seen]     # never called: pruned last, without data


@torch.no_grad()
def prune_sequential(model: nn.Module, calib_tokens: torch.Tensor, method: str, sparsity: float | Sequence[float] | None,
                     *, prunen: int = 0, prunem: int = 0, nsamples: int | None = None,
                     blocks: nn.ModuleList | None = None, true_sequential: bool | None = None, blocksize: int = 128,
                     percdamp: float = 0.01, batch_size: int = 1,
                     forward: Callable[[nn.Module, torch.Tensor], Any] | None = None,
                     progress: bool = True) -> dict[str, torch.Tensor]:
    """Prune every ``nn.Linear`` inside the decoder blocks of ``model``, block by block, in place.

    Args:
        model: a decoder-only LM (a Hugging Face ``LlamaForCausalLM``, ``OPTForCausalLM``, ... or
            any module whose forward pass runs ``blocks`` in order, each block taking the hidden
            states first and returning the next block's input, or a tuple starting with it: residual
            connections belong inside the blocks, as in Hugging Face decoder layers).
        calib_tokens: calibration token ids, ``[nsamples, seq_len]`` (never the evaluation split).
        method: ``"magnitude"`` (no data), ``"wanda"`` or ``"sparsegpt"``.
        sparsity: the fraction pruned in every Linear, or one value per block (non-uniform, e.g.
            OWL); ``None`` (or ``1 - prunen/prunem``) with N:M.
        prunen, prunem: N:M, ``prunen`` kept of every ``prunem`` consecutive inputs.
        nsamples: use the first ``nsamples`` calibration sequences (default: all).
        blocks: the decoder blocks; default :func:`find_blocks`.
        true_sequential: calibrate each group of Linears on the already pruned ones before it in
            the block; default on for SparseGPT, off for Wanda (each reference's behaviour).
        blocksize, percdamp: SparseGPT's (see :func:`~prunekit.llm.sparsegpt_prune_layer`).
        batch_size: calibration sequences per forward pass (the references use 1; the results
            are the same, up to float rounding).
        forward: ``forward(model, ids)`` to call the model (default ``model(ids)``).
        progress: a tqdm bar over the blocks.

    Returns:
        ``{parameter name: bool mask}`` (``True`` = kept) for every pruned weight, e.g.
        ``"model.layers.0.self_attn.q_proj.weight"``. Embeddings, norms and the LM head are not touched.
    """
    check_model(model)
    method = check_choice("method", method, METHODS)
    blocks = find_blocks(model) if blocks is None else blocks
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or not len(blocks):
        raise TypeError(f"blocks must be a non-empty nn.ModuleList of decoder blocks, got {type(blocks).__name__}")
    block_sparsity = _block_sparsities(sparsity, len(blocks), prunen, prunem)
    plans: list[dict[str, nn.Linear]] = []
    patterns: list[tuple[float, int, int]] = []                  # (sparsity, n, m) validated, per block
    for i, (block, s) in enumerate(zip(blocks, block_sparsity)):
        linears = _linears(block)
        pattern = None
        for name, lin in linears.items():
            check_linear(lin, f"blocks[{i}].{name}")
            pattern = check_pattern(s, prunen, prunem, lin.in_features)
        plans.append(linears)
        patterns.append(pattern if pattern is not None else (0.0, 0, 0))
    if not any(plans):
        raise ValueError("the decoder blocks contain no nn.Linear to prune")
    m = max(p[2] for p in patterns)
    bs, pd = check_sparsegpt_args(blocksize, percdamp, m)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    seq = (method == "sparsegpt") if true_sequential is None else check_bool("true_sequential", true_sequential)
    check_bool("progress", progress)
    if forward is not None and not callable(forward):
        raise TypeError(f"forward must be a callable forward(model, ids), got {type(forward).__name__}")
    tokens = None if method == "magnitude" else _check_tokens(calib_tokens, nsamples)

    names = {id(mod): name for name, mod in model.named_modules()}
    masks: dict[str, torch.Tensor] = {}

    iterator: Any = range(len(blocks))
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, desc=f"{method} pruning", unit="block")

    was_training = model.training
    model.eval()
    try:
        if method == "magnitude":
            for i in iterator:
                s_i, n_i, m_i = patterns[i]
                for lin in plans[i].values():
                    masks[names[id(lin)] + ".weight"] = magnitude_prune_layer(lin, s_i, prunen=n_i, prunem=m_i)
            return masks
        device = next(model.parameters()).device
        batches = _capture_first_inputs(model, blocks[0], tokens.to(device), batch_size, forward)
        for i in iterator:
            block, linears, (s_i, n_i, m_i) = blocks[i], plans[i], patterns[i]
            groups = _groups(block, linears, batches[0]) if seq and linears else [list(linears)]
            for group in groups:
                stats = {name: _Stats(linears[name], method) for name in group}
                handles = [linears[name].register_forward_hook(
                    lambda _m, inp, _out, st=stats[name]: st.add(inp[0])) for name in group]
                try:
                    for batch in batches:
                        _run(block, batch)
                finally:
                    for h in handles:
                        h.remove()
                for name in group:
                    lin, st = linears[name], stats[name]
                    if st.n == 0:                                # a Linear the forward pass never used
                        keep = magnitude_prune_layer(lin, s_i, prunen=n_i, prunem=m_i)
                    elif method == "wanda":
                        keep = _wanda_from_norms(lin, st.acc.sqrt(), s_i, n_i, m_i)
                    else:
                        keep = _sparsegpt_from_hessian(lin, st.acc, s_i, n_i, m_i, bs, pd)
                    masks[names[id(lin)] + ".weight"] = keep
            batches = [(_run(block, batch).detach(), batch[1], batch[2]) for batch in batches]
    finally:
        model.train(was_training)
    return masks
