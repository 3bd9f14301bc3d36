"""Attention: nn.MultiheadAttention decomposed into TF.js layers (three Dense projections, Reshape/Permute into
heads, two custom matmul steps around a Softmax, attention Dropout, the output Dense), and the composites
nn.TransformerEncoderLayer / nn.TransformerEncoder emitted from their sub-modules (fx cannot trace their
forward(): it branches on tensor properties for PyTorch's fast path, which computes the same function).
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import nn

from bridge.layers_route.builder import KT, Builder, Refused, module_emitter, plain
from bridge.layers_route.emit_modules import (
    _ACTIVATION_MODULES,
    activation_layer,
    dropout,
    layer_norm,
    linear,
    trainable,
)


def _sequence(ctx: Builder, value: Any, batch_first: bool, what: str) -> KT:
    """A (batch, length, embed) Keras view of a PyTorch (B, L, E) or (L, B, E) tensor."""
    x = plain(ctx.tensor_arg(value, what))
    if x.rank != 3:
        raise Refused(what, "an unbatched (2-D) input")
    return ctx.permute(x, (0, 1, 2) if batch_first else (1, 0, 2), f"{ctx.path}_{what}")


def _heads(ctx: Builder, x: KT, heads: int, name: str, keys: bool) -> KT:
    """(B, L, E) -> (B, H, L, D), or (B, H, D, L) for the keys (so scores are one plain matmul)."""
    b, length, embed = x.keras_shape
    depth = int(embed) // heads  # type: ignore[arg-type]
    split = ctx.add1("Reshape", {"target_shape": [-1 if length is None else int(length), heads, depth]}, [x],
                     (b, length, heads, depth), (0, 1, 2, 3), hint=f"{ctx.path}_{name}_heads")
    order = (0, 2, 3, 1) if keys else (0, 2, 1, 3)
    shape = tuple((b, length, heads, depth)[i] for i in order)
    return ctx.add1("Permute", {"dims": list(order[1:])}, [split], shape, (0, 1, 2, 3), hint=f"{ctx.path}_{name}_t")


def attention(ctx: Builder, module: nn.MultiheadAttention, query: Any, key: Any, value: Any,
              out_shape: tuple[int | None, ...]) -> KT:
    """MultiheadAttention(query, key, value) without masks -> its decomposition; returns the attention output in
    PyTorch's layout."""
    if module.bias_k is not None or module.add_zero_attn:
        raise Refused("MultiheadAttention", "add_bias_kv or add_zero_attn")
    heads, embed = module.num_heads, module.embed_dim
    depth = embed // heads
    q_in, k_in, v_in = (_sequence(ctx, v, module.batch_first, n) for v, n in ((query, "query"), (key, "key"),
                                                                              (value, "value")))
    use_bias = module.in_proj_bias is not None
    first = f"{ctx.path}#out" not in ctx._shared
    names = []
    projected = []
    for x, part in ((q_in, "q"), (k_in, "k"), (v_in, "v")):
        b, length, _ = x.keras_shape
        projected.append(ctx.add1("Dense", {"units": embed, "use_bias": use_bias}, [x], (b, length, embed),
                                  (0, 1, 2), hint=f"{ctx.path}_{part}", shared=f"{ctx.path}#{part}",
                                  trainable=trainable(module)))
        names.append(ctx.layers[-1].name)
    if first:
        _link_projections(ctx, module, names)
    q, k, v = projected
    q = _heads(ctx, q, heads, "q", keys=False)
    k = _heads(ctx, k, heads, "k", keys=True)
    v = _heads(ctx, v, heads, "v", keys=False)
    b, _, lq, _ = q.keras_shape
    lk = k.keras_shape[3]
    q = ctx.add1("Rescaling", {"scale": 1.0 / math.sqrt(depth), "offset": 0.0}, [q], q.torch_shape, q.perm,
                 hint=f"{ctx.path}_scale")
    scores = ctx.custom("matmul", [q, k], {}, (0, 1, 2, 3), torch_shape=(b, heads, lq, lk))
    weights = ctx.add1("Softmax", {"axis": -1}, [scores], scores.torch_shape, scores.perm, hint=f"{ctx.path}_softmax")
    if module.dropout > 0:
        weights = ctx.add1("Dropout", {"rate": float(module.dropout)}, [weights], weights.torch_shape,
                           weights.perm, hint=f"{ctx.path}_dropout")
    context = ctx.custom("matmul", [weights, v], {}, (0, 1, 2, 3), torch_shape=(b, heads, lq, depth))
    merged = ctx.add1("Permute", {"dims": [2, 1, 3]}, [context], (b, lq, heads, depth), (0, 1, 2, 3),
                      hint=f"{ctx.path}_merge_t")
    joined = ctx.add1("Reshape", {"target_shape": [-1 if lq is None else int(lq), embed]}, [merged],
                      (b, lq, embed), (0, 1, 2), hint=f"{ctx.path}_merge")
    out = ctx.add1("Dense", {"units": embed, "use_bias": module.out_proj.bias is not None}, [joined],
                   (b, lq, embed), (0, 1, 2), hint=f"{ctx.path}_out_proj", shared=f"{ctx.path}#out",
                   trainable=trainable(module))
    if first:
        ctx.link(["out_proj.weight"], ["kernel"], "linear_to_in_out", layer=ctx.layers[-1].name)
        if module.out_proj.bias is not None:
            ctx.link(["out_proj.bias"], ["bias"], "identity", layer=ctx.layers[-1].name)
    perm = (0, 1, 2) if module.batch_first else (1, 0, 2)
    return KT(out.id, perm, out_shape, out.dtype)


def _link_projections(ctx: Builder, module: nn.MultiheadAttention, names: list[str]) -> None:
    """q/k/v projection weights: the packed in_proj_weight split in three, or the separate q/k/v weights."""
    if module._qkv_same_embed_dim:
        ctx.link(["in_proj_weight"], ["kernel"] * 3, "split_rows", params={"parts": 3}, tfjs_layers=names)
    else:
        for leaf, name in zip(("q_proj_weight", "k_proj_weight", "v_proj_weight"), names):
            ctx.link([leaf], ["kernel"], "linear_to_in_out", layer=name)
    if module.in_proj_bias is not None:
        ctx.link(["in_proj_bias"], ["bias"] * 3, "split_rows", params={"parts": 3}, tfjs_layers=names)


@module_emitter(nn.MultiheadAttention)
def multihead_attention(ctx: Builder, module: nn.MultiheadAttention, args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> tuple[KT, None]:
    """MultiheadAttention -> (attention output, None): attention weights are not returned."""
    names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask")
    given = dict(zip(names, args))
    given.update(kwargs)
    if given.get("key_padding_mask") is not None or given.get("attn_mask") is not None or given.get("is_causal"):
        raise Refused("MultiheadAttention", "attention masks (not converted to a layers model)")
    assert ctx.node is not None
    if any(u.args[1] != 0 for u in ctx.node.users if len(u.args) > 1) and given.get("need_weights", True):
        raise Refused("MultiheadAttention", "the attention weights output is used")
    return attention(ctx, module, given["query"], given["key"], given["value"], ctx.out_shape(0)), None


@module_emitter(nn.TransformerEncoderLayer)
def encoder_layer(ctx: Builder, module: nn.TransformerEncoderLayer, args: tuple[Any, ...],
                  kwargs: dict[str, Any]) -> KT:
    """TransformerEncoderLayer (post-norm or norm_first), without masks."""
    _no_masks(args, kwargs, "TransformerEncoderLayer")
    return _encoder_layer(ctx, module, ctx.tensor_arg(args[0]), ctx.path, ctx.out_shape())


def _no_masks(args: tuple[Any, ...], kwargs: dict[str, Any], what: str) -> None:
    masks = [a for a in args[1:] if a is not None] + [v for k, v in kwargs.items()
                                                       if "mask" in k and v is not None]
    if masks or kwargs.get("is_causal"):
        raise Refused(what, "attention masks (not converted to a layers model)")


def _encoder_layer(ctx: Builder, module: nn.TransformerEncoderLayer, x: KT, path: str,
                   shape: tuple[int | None, ...]) -> KT:
    prefix = f"{path}." if path else ""
    hidden = (*shape[:-1], module.linear1.out_features)

    def sub(name: str, fn: Any, value: KT, out: tuple[int | None, ...] = shape) -> KT:
        with ctx.scope(f"{prefix}{name}", out):
            return fn(value)

    def self_attention(value: KT) -> KT:
        with ctx.scope(f"{prefix}self_attn", shape):
            attended = attention(ctx, module.self_attn, value, value, value, shape)
        return sub("dropout1", lambda v: dropout(ctx, module.dropout1, (v,), {}), attended)

    def feed_forward(value: KT) -> KT:
        h = sub("linear1", lambda v: linear(ctx, module.linear1, (v,), {}), value, hidden)
        h = sub("activation", lambda v: _activation(ctx, module, v), h, hidden)
        h = sub("dropout", lambda v: dropout(ctx, module.dropout, (v,), {}), h, hidden)
        h = sub("linear2", lambda v: linear(ctx, module.linear2, (v,), {}), h)
        return sub("dropout2", lambda v: dropout(ctx, module.dropout2, (v,), {}), h)

    def norm(name: str, value: KT) -> KT:
        return sub(name, lambda v: layer_norm(ctx, getattr(module, name), (v,), {}), value)

    def residual(a: KT, b: KT, name: str) -> KT:
        b = ctx.permute(plain(b), a.perm)
        with ctx.scope(f"{prefix}{name}", shape):
            return ctx.add1("Add", {}, [a, b], shape, a.perm)

    if module.norm_first:
        x = residual(x, self_attention(norm("norm1", x)), "add1")
        return residual(x, feed_forward(norm("norm2", x)), "add2")
    x = norm("norm1", residual(x, self_attention(x), "add1"))
    return norm("norm2", residual(x, feed_forward(x), "add2"))


def _activation(ctx: Builder, module: nn.TransformerEncoderLayer, x: KT) -> KT:
    act = module.activation
    if act is F.relu:
        return activation_layer(ctx, x, "relu")
    if act is F.gelu:
        return activation_layer(ctx, x, "gelu")
    if isinstance(act, nn.Module) and type(act) in _ACTIVATION_MODULES:
        params = {k: getattr(act, k) for k in ("negative_slope", "alpha", "approximate") if hasattr(act, k)}
        return activation_layer(ctx, x, _ACTIVATION_MODULES[type(act)], **params)
    raise Refused("TransformerEncoderLayer", f"activation {act!r}")


@module_emitter(nn.TransformerEncoder)
def encoder(ctx: Builder, module: nn.TransformerEncoder, args: tuple[Any, ...], kwargs: dict[str, Any]) -> KT:
    """TransformerEncoder: its layers in order, then its norm."""
    _no_masks(args, kwargs, "TransformerEncoder")
    x = ctx.tensor_arg(args[0])
    shape = ctx.out_shape()
    path = ctx.path
    for index, layer in enumerate(module.layers):
        x = _encoder_layer(ctx, layer, x, f"{path}.layers.{index}", shape)
    if module.norm is not None:
        with ctx.scope(f"{path}.norm", shape):
            x = layer_norm(ctx, module.norm, (x,), {})
    return x
