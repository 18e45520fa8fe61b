"""A faster attention kernel for CogVideoX, used by ``fast``/``fastest`` jobs when one is installed.

diffusers' ``set_attention_backend`` has no effect on CogVideoX (its processor calls
``F.scaled_dot_product_attention`` directly), so this module carries its own processor: the same
steps as diffusers' ``CogVideoXAttnProcessor2_0`` with the attention call swapped for
SageAttention or FlashAttention (CUDA, half precision, no mask), else SDPA.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # [B, H, N, D] each -> [B, H, N, D]


def _sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)


def _sage_kernel() -> Kernel | None:
    try:
        sageattn = importlib.import_module("sageattention").sageattn
    except (ImportError, AttributeError):
        return None
    return lambda q, k, v: sageattn(q, k, v, tensor_layout="HND", is_causal=False)


def _flash_kernel() -> Kernel | None:
    try:
        flash_attn_func = importlib.import_module("flash_attn").flash_attn_func
    except (ImportError, AttributeError):
        return None
    # flash-attn wants [B, N, H, D]
    return lambda q, k, v: flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


KERNEL_FINDERS: dict[str, Callable[[], Kernel | None]] = {"sageattention": _sage_kernel, "flash_attn": _flash_kernel}


@dataclass(frozen=True)
class AttentionChoice:
    name: str  # "sageattention", "flash_attn" or "sdpa"
    kernel: Kernel


def pick_kernel(device: str, dtype: torch.dtype) -> AttentionChoice:
    """The fastest installed kernel usable on ``device`` with ``dtype`` (both need CUDA fp16/bf16)."""
    if device.startswith("cuda") and dtype in (torch.float16, torch.bfloat16):
        for name, finder in KERNEL_FINDERS.items():
            kernel = finder()
            if kernel is not None:
                return AttentionChoice(name, kernel)
    return AttentionChoice("sdpa", _sdpa)


class CogVideoXKernelAttnProcessor:
    """CogVideoX joint text+video attention with a chosen kernel (same math as diffusers' processor)."""

    def __init__(self, choice: AttentionChoice) -> None:
        self.choice = choice

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers.models.embeddings import apply_rotary_emb

        text_length = encoder_hidden_states.size(1)
        joint = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch, length, _ = joint.shape
        heads = attn.heads
        query, key, value = attn.to_q(joint), attn.to_k(joint), attn.to_v(joint)
        head_dim = key.shape[-1] // heads
        query, key, value = (t.view(batch, -1, heads, head_dim).transpose(1, 2) for t in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        if image_rotary_emb is not None:
            query[:, :, text_length:] = apply_rotary_emb(query[:, :, text_length:], image_rotary_emb)
            if not attn.is_cross_attention:
                key[:, :, text_length:] = apply_rotary_emb(key[:, :, text_length:], image_rotary_emb)
        if attention_mask is not None:  # the fast kernels take no mask; CogVideoX passes none
            mask = attn.prepare_attention_mask(attention_mask, length, batch).view(batch, heads, -1, length)
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False)
        else:
            out = self.choice.kernel(query, key, value)
        out = out.transpose(1, 2).reshape(batch, -1, heads * head_dim)
        out = attn.to_out[1](attn.to_out[0](out))
        encoder_out, video_out = out.split([text_length, out.size(1) - text_length], dim=1)
        return video_out, encoder_out
