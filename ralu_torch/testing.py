"""Random-weight FLUX pipelines built from configs: for tests, benchmarks and trying the
sampler without downloading weights. Nothing here loads from a hub."""

from __future__ import annotations

import torch

#: FLUX.1-dev's scheduler config (dynamic shifting).
FLUX_DEV_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                          base_image_seq_len=256, max_image_seq_len=4096)
FLUX_SCHNELL_SCHEDULER = dict(shift=1.0, use_dynamic_shifting=False)

#: FLUX.1-dev's VAE (16 latent channels, 8x downsampling).
FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, use_quant_conv=False, use_post_quant_conv=False,
                scaling_factor=0.3611, shift_factor=0.1159)

#: A VAE with FLUX's latent layout and a few channels: for tests, analyses and the CPU proxy.
TINY_VAE = {**FLUX_VAE, "block_out_channels": (8, 8, 8, 8), "layers_per_block": 1, "norm_num_groups": 4}

TINY_TEXT_DIM = TINY_POOLED_DIM = 32


def flux_pipeline(*, tiny: bool = True, guidance_embeds: bool = True, seed: int = 0, device="cpu",
                  dtype=torch.float32):
    """A ``FluxPipeline`` without text encoders (pass ``prompt_embeds``), random weights.

    ``tiny=True``: a one-block transformer and an 8-channel VAE (same token layout as
    FLUX). ``tiny=False``: the full FLUX.1 transformer and VAE architectures, initialised
    on ``device`` directly.
    """
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: no float32 copy of a full-size model
    try:
        with torch.device(device):
            if tiny:
                transformer = FluxTransformer2DModel(
                    patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                    num_attention_heads=2, joint_attention_dim=TINY_TEXT_DIM, pooled_projection_dim=TINY_POOLED_DIM,
                    guidance_embeds=guidance_embeds, axes_dims_rope=(4, 6, 6))
                vae = AutoencoderKL(**TINY_VAE)
            else:
                transformer = FluxTransformer2DModel(guidance_embeds=guidance_embeds)
                vae = AutoencoderKL(**FLUX_VAE)
    finally:
        torch.set_default_dtype(previous)
    sched = FlowMatchEulerDiscreteScheduler(**(FLUX_DEV_SCHEDULER if guidance_embeds else FLUX_SCHNELL_SCHEDULER))
    pipe = FluxPipeline(scheduler=sched, vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=transformer)
    return pipe.to(device)


def word_tokenizer(max_length: int):
    """A word-level tokenizer over a few dozen words (others map to ``[UNK]``): what the tiny
    text encoders read, built in memory."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "</s>"] + "a an the tiny puppy kitten cat dog high fiving photo of red blue".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   eos_token="</s>", model_max_length=max_length)


def flux_pipeline_with_text(seed: int = 0):
    """The tiny ``FluxPipeline`` with tiny random CLIP and T5 text encoders and word-level
    tokenizers: a whole pipeline that takes prompts, ``save_pretrained`` writes and
    ``from_pretrained`` (and ``ralu generate --model``) reads, without any download."""
    from diffusers import FluxPipeline
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    pipe = flux_pipeline(tiny=True, seed=seed)
    torch.manual_seed(seed + 1)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=20, hidden_size=TINY_POOLED_DIM, intermediate_size=37,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                        pad_token_id=0, bos_token_id=1, eos_token_id=2))
    t5 = T5EncoderModel(T5Config(vocab_size=20, d_model=TINY_TEXT_DIM, d_ff=37, d_kv=8, num_layers=1, num_heads=2,
                                 pad_token_id=0, eos_token_id=2))
    return FluxPipeline(scheduler=pipe.scheduler, vae=pipe.vae, transformer=pipe.transformer, text_encoder=clip,
                        tokenizer=word_tokenizer(77), text_encoder_2=t5, tokenizer_2=word_tokenizer(512))


def prompt_embeds(pipe, batch: int = 1, text_tokens: int = 8, seed: int = 1):
    """Random ``prompt_embeds`` and ``pooled_prompt_embeds`` that fit ``pipe``'s transformer."""
    cfg = pipe.transformer.config
    g = torch.Generator().manual_seed(seed)
    dev, dt = pipe.transformer.device, pipe.transformer.dtype
    return dict(prompt_embeds=torch.randn(batch, text_tokens, cfg.joint_attention_dim, generator=g).to(dev, dt),
                pooled_prompt_embeds=torch.randn(batch, cfg.pooled_projection_dim, generator=g).to(dev, dt))


def sd3_pipeline(*, dual_attention: bool = True, seed: int = 0, device="cpu", dtype=torch.float32,
                 sample_size: int = 32, pos_embed_max_size: int = 48):
    """A tiny ``StableDiffusion3Pipeline`` without text encoders (pass the embeddings), random
    weights; ``dual_attention`` adds SD3.5-medium's second, image-only attention to block 0."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=TINY_TEXT_DIM, caption_projection_dim=16,
        pooled_projection_dim=TINY_POOLED_DIM, pos_embed_max_size=pos_embed_max_size,
        dual_attention_layers=(0,) if dual_attention else (), qk_norm="rms_norm" if dual_attention else None)
    vae = AutoencoderKL(**{**TINY_VAE, "scaling_factor": 1.5305, "shift_factor": 0.0609})
    pipe = StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                                    vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                    text_encoder_3=None, tokenizer_3=None)
    return pipe.to(device=device, dtype=dtype)


def sd3_prompt_embeds(pipe, batch: int = 1, text_tokens: int = 8, seed: int = 1, negative: bool = True):
    """Random prompt (and negative prompt) embeddings that fit ``pipe``'s SD3 transformer."""
    cfg = pipe.transformer.config
    g = torch.Generator().manual_seed(seed)
    dev, dt = pipe.transformer.device, pipe.transformer.dtype
    rand = lambda *shape: torch.randn(*shape, generator=g).to(dev, dt)  # noqa: E731
    out = dict(prompt_embeds=rand(batch, text_tokens, cfg.joint_attention_dim),
               pooled_prompt_embeds=rand(batch, cfg.pooled_projection_dim))
    if negative:
        out.update(negative_prompt_embeds=rand(batch, text_tokens, cfg.joint_attention_dim),
                   negative_pooled_prompt_embeds=rand(batch, cfg.pooled_projection_dim))
    return out


class HostSyncDetector:
    """Records the operators that make a device wait for the host (or copy data to it):
    ``.item()``/``bool()``/``.tolist()`` of a tensor, ``nonzero``, ``unique``, boolean-mask
    indexing, ``torch.equal``. On a CUDA device each is a synchronisation; on the CPU they
    are recorded all the same, so a CPU test proves a code path is free of them (except
    ``.tolist()``, which reads CPU memory without passing through the dispatcher).

        with HostSyncDetector() as sync:
            run_steps(...)
        assert not sync.ops, sync.ops
    """

    SYNCING = ("_local_scalar_dense", "item", "is_nonzero", "nonzero", "_unique", "unique_dim",
               "unique_consecutive", "masked_select", "equal")

    def __init__(self):
        self.ops = []
        self._mode = None

    def __enter__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        detector = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.__name__.split(".")[0]
                bool_index = name == "index" and any(
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ())
                    if i is not None)
                if bool_index or any(name == s or name.startswith(s) for s in detector.SYNCING):
                    detector.ops.append(name)
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc):
        self._mode.__exit__(*exc)
        return False
