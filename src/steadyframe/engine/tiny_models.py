"""Build the built-in tiny CogVideoX models: random weights, real diffusers classes, saved to disk.

Built deterministically (fixed seed, fixed construction order) the first time a tiny family is
used, then always loaded through ``from_pretrained`` like a real model. The build happens in a
temporary folder that is renamed into place, so two processes building at once are both safe.
"""

from __future__ import annotations

import json
import os
import shutil
import string
import tempfile
import threading
from pathlib import Path

import torch

from steadyframe.families import BUILTIN_MARKER, Family

_SEED = 20240806
# Weight init draws from torch's global RNG: one build at a time per process keeps it deterministic.
_BUILD_LOCK = threading.Lock()
_TEXT_DIM = 32
_LATENT_CHANNELS = 4
# Common prompt words get their own token so tiny-model token counts resemble real T5's.
_WORDS = (
    "a an the of and or in on at to with from by for over under into through near behind above below "
    "is are was be being it its this that these those as while slowly quickly gently "
    "video scene shot camera view close up wide aerial cinematic film footage light lighting sun sunset "
    "sunrise night day sky cloud clouds rain snow fog water sea ocean beach wave waves river lake forest "
    "tree trees flower flowers grass mountain mountains city street road car cars train building house "
    "room window door man woman person people child children girl boy dog cat bird birds horse fish "
    "walking running flying swimming dancing sitting standing playing moving looking smiling talking "
    "red green blue yellow white black orange purple pink golden bright dark soft warm cold "
    "small big large tiny old young beautiful realistic detailed high quality 4k hd motion style "
    "background foreground portrait landscape colorful vibrant calm peaceful busy"
).split()


def _vocab() -> list[tuple[str, float]]:
    """A unigram vocabulary: specials, whole words, then single characters as a fallback."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + w, -4.0) for w in _WORDS]
    chars = string.ascii_letters + string.digits + string.punctuation
    pieces += [("\u2581" + c, -9.0) for c in chars]
    pieces += [(c, -10.0) for c in chars]
    return pieces


def _transformer_config(family: Family) -> dict:
    v15 = family.generation == "1.5"
    i2v = family.task == "i2v"
    config: dict = dict(
        num_attention_heads=2,
        attention_head_dim=16,  # rotary embeddings need a multiple of 16
        in_channels=_LATENT_CHANNELS * (2 if i2v else 1),
        out_channels=_LATENT_CHANNELS,
        time_embed_dim=32,
        text_embed_dim=_TEXT_DIM,
        num_layers=2,
        sample_frames=family.default_frames,
        patch_size=2,
        max_text_seq_length=226,
        use_rotary_positional_embeddings=family.scheduler == "dpm",  # like 5b/1.5; tiny-t2v is 2b-like
        use_learned_positional_embeddings=i2v and not v15,
    )
    if v15:
        # the 1.5 rotary grid is bounded by sample_height/width (in patches after //patch_size)
        config.update(sample_height=300, sample_width=300, patch_size_t=2, patch_bias=False)
        if i2v:
            config["ofs_embed_dim"] = config["time_embed_dim"]  # the two embeddings are summed
    else:
        config.update(sample_height=family.default_height // 8, sample_width=family.default_width // 8)
    return config


def _scheduler_config(family: Family) -> dict:
    return dict(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
        prediction_type="v_prediction", rescale_betas_zero_snr=True, set_alpha_to_one=True,
        snr_shift_scale=1.0 if family.generation == "1.5" else 3.0, timestep_spacing="trailing",
    )  # fmt: skip


def _build_into(family: Family, folder: Path) -> None:
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXDPMScheduler,
        CogVideoXImageToVideoPipeline,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        tokenizer = T5Tokenizer(vocab=_vocab(), extra_ids=0)
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer), d_model=_TEXT_DIM, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                relative_attention_num_buckets=8, dropout_rate=0.0,
            )
        )  # fmt: skip
        # sample_height/width stay 480/720: VAE tiling sizes its tiles from them
        vae = AutoencoderKLCogVideoX(
            block_out_channels=(8, 8, 16, 16), latent_channels=_LATENT_CHANNELS, layers_per_block=1,
            norm_num_groups=4, temporal_compression_ratio=4, sample_height=480, sample_width=720,
        )  # fmt: skip
        transformer = CogVideoXTransformer3DModel(**_transformer_config(family))
    scheduler_cls = CogVideoXDDIMScheduler if family.scheduler == "ddim" else CogVideoXDPMScheduler
    scheduler = scheduler_cls(**_scheduler_config(family))
    pipeline_cls = CogVideoXImageToVideoPipeline if family.task == "i2v" else CogVideoXPipeline
    pipe = pipeline_cls(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / BUILTIN_MARKER).write_text(json.dumps({"family": family.name, "test_noise": True}))


def ensure_tiny_model(family: Family, folder: Path) -> Path:
    """Return ``folder`` holding the built tiny model for ``family``, building it first if absent."""
    if (folder / BUILTIN_MARKER).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{family.name}-", dir=folder.parent))
    try:
        with _BUILD_LOCK:
            _build_into(family, staging)
        try:
            os.rename(staging, folder)  # atomic; fails if another process finished first
        except OSError:
            if not (folder / BUILTIN_MARKER).is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return folder
