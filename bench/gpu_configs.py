"""Model configs for ``bench/gpu_check.py``: the CogVideoX-5B architecture (written here from the
published model's component configs, no download) and a tiny one for ``--dry-run`` on a CPU."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class CheckModel:
    name: str
    transformer: dict[str, Any]
    vae: dict[str, Any]
    text_encoder: dict[str, Any]
    frames: int
    height: int
    width: int
    scheduler: dict[str, Any] = field(
        default_factory=lambda: dict(
            beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
            prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
            snr_shift_scale=1.0, timestep_spacing="trailing", num_train_timesteps=1000,
        )
    )  # fmt: skip


COGVIDEOX_5B = CheckModel(
    name="CogVideoX-5B architecture, random bf16 weights",
    transformer=dict(
        num_attention_heads=48, attention_head_dim=64, in_channels=16, out_channels=16, flip_sin_to_cos=True,
        freq_shift=0, time_embed_dim=512, text_embed_dim=4096, num_layers=42, dropout=0.0, attention_bias=True,
        sample_width=90, sample_height=60, sample_frames=49, patch_size=2, temporal_compression_ratio=4,
        max_text_seq_length=226, activation_fn="gelu-approximate", timestep_activation_fn="silu",
        norm_elementwise_affine=True, norm_eps=1e-5, spatial_interpolation_scale=1.875,
        temporal_interpolation_scale=1.0, use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=False,
    ),
    vae=dict(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(128, 256, 256, 512), latent_channels=16,
        layers_per_block=3, act_fn="silu", norm_eps=1e-6, norm_num_groups=32, temporal_compression_ratio=4,
        sample_height=480, sample_width=720, scaling_factor=0.7, use_quant_conv=False, use_post_quant_conv=False,
    ),
    text_encoder=dict(  # T5 v1.1 XXL encoder
        vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
        relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
        dropout_rate=0.0, layer_norm_epsilon=1e-6, tie_word_embeddings=False,
    ),
    frames=49, height=480, width=720,
)  # fmt: skip

TINY = CheckModel(
    name="tiny CogVideoX (dry run)",
    transformer=dict(
        num_attention_heads=2, attention_head_dim=64, in_channels=4, out_channels=4, time_embed_dim=32,
        text_embed_dim=32, num_layers=2, sample_width=12, sample_height=8, sample_frames=9, patch_size=2,
        use_rotary_positional_embeddings=True,
    ),
    vae=dict(
        block_out_channels=(8, 8, 16, 16), latent_channels=4, layers_per_block=1, norm_num_groups=4,
        temporal_compression_ratio=4, sample_height=480, sample_width=720,
    ),
    text_encoder=dict(
        vocab_size=400, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, relative_attention_num_buckets=8,
        dropout_rate=0.0,
    ),
    frames=9, height=64, width=96,
)  # fmt: skip


def build_pipeline(model: CheckModel, device: str) -> Any:
    """A CogVideoXPipeline with random weights, built in bf16 (fp32 on a CPU) directly on ``device``."""
    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXDPMScheduler, CogVideoXPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    from steadyframe.engine.tiny_models import _vocab

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            torch.manual_seed(0)
            tokenizer = T5Tokenizer(vocab=_vocab(), extra_ids=0)  # ids stay below every vocab size here
            config = dict(model.text_encoder, vocab_size=max(model.text_encoder["vocab_size"], len(tokenizer)))
            text_encoder = T5EncoderModel(T5Config(**config)).to(dtype).eval()
            transformer = CogVideoXTransformer3DModel(**model.transformer).to(dtype).eval()
            vae = AutoencoderKLCogVideoX(**model.vae).to(dtype).eval()
    finally:
        torch.set_default_dtype(previous)
    scheduler = CogVideoXDPMScheduler(**model.scheduler)
    pipe = CogVideoXPipeline(tokenizer, text_encoder, vae, transformer, scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe
