"""Tiny random FLUX pipelines built from configs (no downloads) for the sampler tests."""

import torch
from diffusers import FluxPipeline

from ralu_torch.testing import TINY_POOLED_DIM as POOLED_DIM, TINY_TEXT_DIM as TEXT_DIM, flux_pipeline, \
    flux_pipeline_with_text, word_tokenizer

TEXT_TOKENS = 8


def tiny_flux(guidance_embeds=True, seed=0, dtype=torch.float32) -> FluxPipeline:
    pipe = flux_pipeline(tiny=True, guidance_embeds=guidance_embeds, seed=seed, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def embeds(batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(prompt_embeds=torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=g),
                pooled_prompt_embeds=torch.randn(batch, POOLED_DIM, generator=g))


def tiny_flux_with_text(seed=0) -> FluxPipeline:
    """The tiny FLUX with tiny CLIP and T5 text encoders and word-level tokenizers."""
    full = flux_pipeline_with_text(seed=seed)
    full.set_progress_bar_config(disable=True)
    return full


def tiny_sd3_with_text(seed=0):
    """The tiny SD3.5-medium-style pipeline with tiny CLIP-L/G (with projection) and T5."""
    from diffusers import StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from ralu_torch.testing import sd3_pipeline

    pipe = sd3_pipeline(seed=seed)
    torch.manual_seed(seed + 1)
    clip = lambda: CLIPTextModelWithProjection(CLIPTextConfig(  # noqa: E731
        vocab_size=20, hidden_size=POOLED_DIM // 2, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=POOLED_DIM // 2, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    t5 = T5EncoderModel(T5Config(vocab_size=20, d_model=TEXT_DIM, d_ff=37, d_kv=8, num_layers=1, num_heads=2,
                                 pad_token_id=0, eos_token_id=2))
    full = StableDiffusion3Pipeline(transformer=pipe.transformer, scheduler=pipe.scheduler, vae=pipe.vae,
                                    text_encoder=clip(), tokenizer=word_tokenizer(77), text_encoder_2=clip(),
                                    tokenizer_2=word_tokenizer(77), text_encoder_3=t5,
                                    tokenizer_3=word_tokenizer(256))
    full.set_progress_bar_config(disable=True)
    return full


def counted(fn, *, result: bool = False):
    """torch's FLOP counter around ``fn()``: (all FLOPs, weight-layer FLOPs), and ``fn``'s result
    with ``result``. Attention is what the counter files under bmm / attention (the cost model's
    paper convention leaves it out)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        out = fn()
    per_op = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    attention = sum(v for k, v in per_op.items() if "bmm" in k or "attention" in k)
    full = fc.get_total_flops()
    return (full, full - attention, out) if result else (full, full - attention)


#: The pipelines that start from an image (or a clip) RALU runs, by the tiny model of
#: ralu_torch.testing.tiny_pipeline they are built on.
IMG2IMG = {"FluxImg2ImgPipeline": "flux-dev", "StableDiffusion3Img2ImgPipeline": "sd3-medium",
           "QwenImageImg2ImgPipeline": "qwen-image", "ZImageImg2ImgPipeline": "z-image",
           "ChromaImg2ImgPipeline": "chroma", "WanVideoToVideoPipeline": "wan2.1-t2v-14b"}


def tiny_img2img(name: str, scheduler: str = "euler"):
    """``(pipeline, text-to-image pipeline)``: the tiny ``name`` (one of :data:`IMG2IMG`) on the
    components of its family's tiny text-to-X pipeline (Wan: ``scheduler`` "euler" or "unipc")."""
    import diffusers

    from ralu_torch.testing import tiny_pipeline, wan_pipeline

    if name == "WanVideoToVideoPipeline":
        t2v = wan_pipeline(scheduler=scheduler)
        pipe = diffusers.WanVideoToVideoPipeline(tokenizer=None, text_encoder=None, vae=t2v.vae,
                                                 scheduler=t2v.scheduler, transformer=t2v.transformer)
        base = t2v
    else:
        base = tiny_pipeline(IMG2IMG[name])
        pipe = getattr(diffusers, name).from_pipe(base)
    pipe.set_progress_bar_config(disable=True)
    return pipe, base


def pictures(n: int, height: int, width: int, seed: int = 0) -> list:
    """``n`` random RGB PIL images (frames) of ``height x width``."""
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8")) for _ in range(n)]


# -- pipelines with reference images (tests/test_references.py) ---------------------------------
def tiny_kontext(seed=0):
    """A tiny ``FluxKontextPipeline``: the tiny FLUX.1-dev transformer and VAE, no text encoders
    (pass ``prompt_embeds`` and ``pooled_prompt_embeds``)."""
    from diffusers import FluxKontextPipeline

    base = tiny_flux(seed=seed)
    pipe = FluxKontextPipeline(scheduler=base.scheduler, vae=base.vae, text_encoder=None, tokenizer=None,
                               text_encoder_2=None, tokenizer_2=None, transformer=base.transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_qwen_edit(plus=False, seed=0):
    """A tiny ``QwenImageEditPipeline`` (``plus``: ``QwenImageEditPlusPipeline``, 2509): the tiny
    Qwen-Image transformer, no text encoder or processor (pass ``prompt_embeds``), and a small
    Qwen-Image VAE that downsamples 32x (64 pixels per token). The pipelines resize every reference
    to about 1024 x 1024 pixels; at 32x that is about 256 reference tokens, at the family's 8x 4096,
    too slow for a CPU test of every stage."""
    import diffusers as d

    from ralu_torch.testing import tiny_pipeline

    base = tiny_pipeline("qwen-image", seed=seed)
    torch.manual_seed(seed + 3)
    vae = d.AutoencoderKLQwenImage(base_dim=4, z_dim=16, dim_mult=[1, 1, 1, 1, 1, 1], num_res_blocks=1,
                                   temperal_downsample=[False, True, True, False, False])
    cls = d.QwenImageEditPlusPipeline if plus else d.QwenImageEditPipeline
    pipe = cls(scheduler=base.scheduler, vae=vae, text_encoder=None, tokenizer=None, processor=None,
               transformer=base.transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def memoized_encode(vae):
    """Make ``vae.encode`` remember its results by input (shape and bytes): the reference
    pipelines encode the same image in every call, stock and RALU alike, and at the pipelines'
    1024 x 1024 pixels that encode is most of a tiny model's CPU time. The function is
    deterministic (its latents are read at the mode), so results are unchanged."""
    encode, seen = vae.encode, {}

    def remembered(x, *args, **kwargs):
        key = (tuple(x.shape), x.dtype, x.detach().cpu().numpy().tobytes())
        if key not in seen:
            seen[key] = encode(x, *args, **kwargs)
        return seen[key]

    vae.encode = remembered
    return vae


def picture(height, width, seed=0):
    """A random RGB PIL image."""
    import numpy as np
    import PIL.Image

    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray((rng.random((height, width, 3)) * 255).astype("uint8"))


def reference_inputs(pipe, batch=1, *, guided=False, **kwargs):
    """``ralu_torch.testing.tiny_inputs`` for a reference pipeline: the embeddings of its family's
    text-to-image pipeline (FLUX.1 Kontext takes FluxPipeline's, Qwen-Image-Edit QwenImagePipeline's)."""
    from ralu_torch.testing import tiny_inputs

    base = {"FluxKontextPipeline": "FluxPipeline", "QwenImageEditPipeline": "QwenImagePipeline",
            "QwenImageEditPlusPipeline": "QwenImagePipeline"}.get(type(pipe).__name__)
    stand_in = pipe if base is None else type(base, (), {"transformer": pipe.transformer, "config": pipe.config})()
    return tiny_inputs(stand_in, batch, guided=guided, **kwargs)
