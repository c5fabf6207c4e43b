"""Per-image rotary position embeddings for FLUX, so that a batch whose images hold
different token sets (the mixed stage) runs in one transformer call.

diffusers' FLUX computes one rotary table ``(T + L, D)`` from 2-D ids and applies it to
every image of the batch. For a mixed batch the backend builds one table per image once per
stage (:func:`per_image_rotary`, with the transformer's own ``pos_embed``) and passes it in
``joint_attention_kwargs["ralu_rotary"]``, which FLUX forwards to every attention call.
:class:`PerImageRotaryProcessor` wraps each attention module's stock ``FluxAttnProcessor``:
without ``ralu_rotary`` it calls the stock processor, unchanged; with it, it runs the same
attention with each image's table. So calls without RALU compute exactly what they did,
and the transformer's own ``forward`` (its hooks, LoRA scaling, attention backend) runs
either way. Other processors (IP-Adapter, custom ones) are left alone; the backend then
falls back to one call per image for mixed batches.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class PerImageRotary(NamedTuple):
    """Rotary ``cos`` and ``sin`` per image: each ``(B, S, head_dim)``."""

    cos: torch.Tensor
    sin: torch.Tensor


def rotate(x: torch.Tensor, rotary: PerImageRotary) -> torch.Tensor:
    """Apply per-image rotary tables to ``x`` ``(B, S, heads, head_dim)``, pairing features
    ``(2i, 2i + 1)`` as FLUX does; computed in float32 and returned in ``x``'s dtype."""
    pairs = x.float().unflatten(-1, (-1, 2))
    turned = torch.stack([-pairs[..., 1], pairs[..., 0]], dim=-1).flatten(-2)
    cos, sin = rotary.cos[:, :, None, :], rotary.sin[:, :, None, :]
    return (x.float() * cos + turned * sin).to(x.dtype)


def per_image_rotary(pos_embed, txt_ids: torch.Tensor, img_ids: torch.Tensor) -> PerImageRotary:
    """Tables ``(B, T + L, D)`` from FLUX's ``pos_embed``, shared text ids ``(T, 3)`` and
    per-image ids ``(B, L, 3)``: every image sees the text, then its own tokens."""
    B, L, _ = img_ids.shape
    cos, sin = pos_embed(torch.cat([txt_ids, img_ids.reshape(B * L, 3)]))
    T = txt_ids.shape[0]
    per_image = lambda t: torch.cat([t[:T].expand(B, -1, -1), t[T:].view(B, L, -1)], dim=1)  # noqa: E731
    return PerImageRotary(per_image(cos), per_image(sin))


class PerImageRotaryProcessor:
    """FLUX attention with a rotary table per image; stock tables go to the stock processor."""

    def __init__(self, stock):
        self.stock = stock

    # diffusers sets these on processors (attention backend, context parallelism): keep them on the stock one
    @property
    def _attention_backend(self):
        return self.stock._attention_backend

    @_attention_backend.setter
    def _attention_backend(self, value):
        self.stock._attention_backend = value

    @property
    def _parallel_config(self):
        return self.stock._parallel_config

    @_parallel_config.setter
    def _parallel_config(self, value):
        self.stock._parallel_config = value

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, image_rotary_emb=None,
                 ralu_rotary: PerImageRotary | None = None):
        if ralu_rotary is None:
            return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask, image_rotary_emb)
        from diffusers.models.attention_dispatch import dispatch_attention_fn

        heads = lambda t: t.unflatten(-1, (-1, attn.head_dim))  # noqa: E731
        if attn.fused_projections:
            q, k, v = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        q, k, v = attn.norm_q(heads(q)), attn.norm_k(heads(k)), heads(v)
        text_len = 0
        if encoder_hidden_states is not None and attn.added_kv_proj_dim is not None:
            if attn.fused_projections:
                eq, ek, ev = attn.to_added_qkv(encoder_hidden_states).chunk(3, dim=-1)
            else:
                eq, ek, ev = (attn.add_q_proj(encoder_hidden_states), attn.add_k_proj(encoder_hidden_states),
                              attn.add_v_proj(encoder_hidden_states))
            eq, ek, ev = attn.norm_added_q(heads(eq)), attn.norm_added_k(heads(ek)), heads(ev)
            q, k, v = torch.cat([eq, q], dim=1), torch.cat([ek, k], dim=1), torch.cat([ev, v], dim=1)
            text_len = encoder_hidden_states.shape[1]
        q, k = rotate(q, ralu_rotary), rotate(k, ralu_rotary)
        out = dispatch_attention_fn(q, k, v, attn_mask=attention_mask, backend=self._attention_backend,
                                    parallel_config=self._parallel_config)
        out = out.flatten(2, 3).to(q.dtype)
        if not text_len:
            return out
        text, image = out[:, :text_len], out[:, text_len:]
        image = attn.to_out[1](attn.to_out[0](image.contiguous()))
        return image, attn.to_add_out(text.contiguous())


def install(transformer) -> bool:
    """Wrap the stock attention processors of a ``FluxTransformer2DModel`` (idempotent).
    Returns whether every attention module now accepts per-image tables (False if some use
    another processor)."""
    from diffusers.models.transformers.transformer_flux import FluxAttnProcessor

    ready = True
    for module in transformer.modules():
        proc = getattr(module, "processor", None)
        if proc is None or isinstance(proc, PerImageRotaryProcessor):
            continue
        if type(proc) is FluxAttnProcessor:
            module.processor = PerImageRotaryProcessor(proc)
        else:
            ready = False
    return ready
