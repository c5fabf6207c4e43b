"""Random-weight pipelines of every supported family built from configs: for tests,
benchmarks and trying the sampler without downloading weights. Nothing here loads from a hub.

``flux_pipeline`` and ``sd3_pipeline`` build FLUX.1 and SD3; :func:`tiny_pipeline` builds any
family's text-to-image pipeline (one or two blocks, a VAE of 8 channels, the family's real
layer types and scheduler rule) and :func:`tiny_inputs` the prompt embeddings that fit it.
"""

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

#: The published transformer configurations of the newer families (diffusers' argument names;
#: FLUX.2 [dev]'s is its class's default), for full-size models on the meta device (FLOP
#: counts) or, on a GPU, with random weights (bench/latency.py --model full).
FULL_TRANSFORMERS = {
    "flux2-dev": {},
    "flux2-klein-4b": dict(num_layers=5, num_single_layers=20, num_attention_heads=24, attention_head_dim=128,
                           joint_attention_dim=7680, guidance_embeds=False),
    "flux2-klein-9b": dict(num_layers=8, num_single_layers=24, num_attention_heads=32, attention_head_dim=128,
                           joint_attention_dim=12288, guidance_embeds=False),
    "qwen-image": dict(patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
                       num_attention_heads=24, joint_attention_dim=3584, guidance_embeds=False,
                       axes_dims_rope=(16, 56, 56)),
    "z-image": dict(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=3840, n_layers=30,
                    n_refiner_layers=2, n_heads=30, n_kv_heads=30, cap_feat_dim=2560, axes_dims=[32, 48, 48],
                    axes_lens=[1536, 512, 512], rope_theta=256.0, qk_norm=True),
    "chroma": dict(num_layers=19, num_single_layers=38, num_attention_heads=24, attention_head_dim=128,
                   joint_attention_dim=4096, in_channels=64, axes_dims_rope=(16, 56, 56),
                   approximator_num_channels=64, approximator_hidden_dim=5120, approximator_layers=5),
    # Wan-AI/Wan2.1-T2V-14B-Diffusers transformer/config.json; the rest WanTransformer3DModel's defaults
    "wan2.1-t2v-14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40,
                           in_channels=16, out_channels=16),
    # diffusers' scripts/convert_hunyuan_video1_5_to_diffusers.py, 480p_t2v (720p: target_size 960)
    "hunyuanvideo1.5-480p": dict(in_channels=65, out_channels=32, num_attention_heads=16, attention_head_dim=128,
                                 num_layers=54, num_refiner_layers=2, mlp_ratio=4.0, patch_size=1, patch_size_t=1,
                                 qk_norm="rms_norm", text_embed_dim=3584, text_embed_2_dim=1472, image_embed_dim=1152,
                                 rope_theta=256.0, rope_axes_dim=(16, 56, 56), use_meanflow=False, target_size=640,
                                 task_type="t2v"),
    # Qwen/Qwen-Image-2.1 transformer/config.json: QwenImage21Transformer2DModel's defaults
    "qwen-image-2.1": {},
}

TINY_TEXT_DIM = TINY_POOLED_DIM = 32

#: The tiny FLUX.1 transformer (one double and one single block; FLUX's token layout).
TINY_FLUX = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=TINY_TEXT_DIM, pooled_projection_dim=TINY_POOLED_DIM,
                 axes_dims_rope=(4, 6, 6))


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
                transformer = FluxTransformer2DModel(**TINY_FLUX, guidance_embeds=guidance_embeds)
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


def word_tokenizer(max_length: int, special: tuple = ()):
    """A word-level tokenizer over a few dozen words (others map to ``[UNK]``): what the tiny
    text encoders read, built in memory; ``special``: added special tokens (a chat template's)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "</s>"] + "a an the tiny puppy kitten cat dog high fiving photo of red blue".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   eos_token="</s>", model_max_length=max_length,
                                   **({"additional_special_tokens": list(special)} if special else {}))


#: The chat tokens of Qwen's templates, and a chat template of their form (role headers between
#: ``<|im_start|>`` and ``<|im_end|>``, text parts of a message joined): what the tiny Qwen
#: tokenizers of QwenImage21Pipeline and HunyuanVideo15Pipeline read.
QWEN_CHAT_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
                    "<|video_pad|>")
QWEN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def qwen_chat_tokenizer(max_length: int = 4096):
    """:func:`word_tokenizer` with Qwen's chat tokens and :data:`QWEN_CHAT_TEMPLATE`."""
    tok = word_tokenizer(max_length, special=QWEN_CHAT_TOKENS)
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def qwen3_vl_processor():
    """A text-only ``Qwen3VLProcessor`` over :func:`qwen_chat_tokenizer`: what ``QwenImage21Pipeline``
    reads when it is built (the system prefix's length, the image-pad token) and tokenizes prompts
    with. Its video processor is the bare base class: Qwen3-VL's own, and the processor's class
    check of it, import torchvision (so a saved pipeline loads again only where torchvision is)."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.video_processing_utils import BaseVideoProcessor

    class TextQwen3VLProcessor(Qwen3VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor":
                return type(argument)
            return super().check_argument_for_proper_class(argument_name, argument)

    return TextQwen3VLProcessor(image_processor=Qwen2VLImageProcessor(patch_size=16, merge_size=2),
                                tokenizer=qwen_chat_tokenizer(), video_processor=BaseVideoProcessor(),
                                chat_template=QWEN_CHAT_TEMPLATE)


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


#: The scheduler configurations the families publish (their rules, not their weights).
SCHEDULERS = {
    "flux-dev": FLUX_DEV_SCHEDULER,
    "flux-schnell": FLUX_SCHNELL_SCHEDULER,
    "flux2": dict(shift=3.0, use_dynamic_shifting=True),       # the pipeline's empirical mu drives it
    "qwen-image": dict(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256,
                       max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential"),
    "z-image-turbo": dict(shift=3.0, use_dynamic_shifting=False),
    "z-image": dict(shift=6.0, use_dynamic_shifting=False),
    "chroma": dict(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                   max_image_seq_len=4096),
    # Qwen/Qwen-Image-2.1 scheduler/scheduler_config.json (docs/cost.md says where this was read)
    "qwen-image-2.1": dict(shift=1.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=0.9, base_image_seq_len=256,
                           max_image_seq_len=8192, shift_terminal=0.02, time_shift_type="exponential"),
}

#: Families :func:`tiny_pipeline` builds, by the name of the model variant they stand for.
TINY_MODELS = ("flux-dev", "flux-schnell", "sd3-medium", "flux2-dev", "flux2-klein-4b", "flux2-klein-base-4b",
               "qwen-image", "z-image-turbo", "z-image", "chroma", "wan2.1-t2v-14b", "wan2.2-t2v-a14b",
               "hunyuanvideo1.5-480p", "qwen-image-2.1", "ltx-2")

#: The tiny Wan transformer (two blocks of Wan's layer types; inner width 24).
TINY_WAN = dict(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=16, out_channels=16,
                text_dim=TINY_TEXT_DIM, freq_dim=32, ffn_dim=32, num_layers=2, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", rope_max_seq_len=64)

#: Wan's published scheduler: UniPC on flow sigmas with a fixed shift (the model cards: 3.0 at
#: 480p, 5.0 at 720p for Wan 2.1; 12.0 for Wan 2.2 A14B)
WAN_UNIPC = dict(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000)


def wan_pipeline(*, experts: int = 1, boundary_ratio: float = 0.875, scheduler: str = "euler", flow_shift: float = 3.0,
                 seed: int = 0, device="cpu", dtype=torch.float32):
    """A tiny ``WanPipeline`` without a text encoder (pass ``prompt_embeds``): two-block
    ``WanTransformer3DModel`` expert(s) of Wan's layer types, a small ``AutoencoderKLWan``
    (8x spatial, 4x temporal), and ``scheduler`` "euler" (``FlowMatchEulerDiscreteScheduler``
    with ``shift=flow_shift``, what the one-stage parity tests compare against) or "unipc"
    (Wan's published ``UniPCMultistepScheduler`` configuration). ``experts=2`` adds
    ``transformer_2`` switched at ``boundary_ratio`` (Wan 2.2 A14B)."""
    import diffusers as d

    torch.manual_seed(seed)

    def expert():
        return d.WanTransformer3DModel(**TINY_WAN)

    tr = expert()
    tr2 = expert() if experts == 2 else None
    vae = d.AutoencoderKLWan(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                             temperal_downsample=[False, True, True])
    if scheduler == "euler":
        sched = d.FlowMatchEulerDiscreteScheduler(shift=flow_shift)
    elif scheduler == "unipc":
        sched = d.UniPCMultistepScheduler(**WAN_UNIPC, flow_shift=flow_shift)
    else:
        raise ValueError(f"scheduler must be euler or unipc, got {scheduler!r}")
    pipe = d.WanPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=sched, transformer=tr, transformer_2=tr2,
                         boundary_ratio=boundary_ratio if experts == 2 else None)
    pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


#: LTX-2's published scheduler: LTX-Video's dynamic shift (anchors 1024 and 4096 tokens, 0.95 and 2.05) and
#: a grid stretched to end at sigma 0.1 (diffusers' guide rebuilds it without them for the distilled stage)
LTX2_SCHEDULER = dict(shift=1.0, use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                      max_image_seq_len=4096, shift_terminal=0.1)
#: Gemma's hidden width in the tiny LTX-2 (the connectors' caption channels) and the hidden states it stacks
TINY_LTX2_TEXT, TINY_LTX2_LAYERS = 32, 3
#: The tiny LTX-2 transformer: two blocks of both streams (video 2 x 8, audio 2 x 4), LTX-2.3's perturbed
#: self-attention (so spatio-temporal guidance changes a call) and split rotary tables.
TINY_LTX2 = dict(in_channels=4, out_channels=4, patch_size=1, patch_size_t=1, num_attention_heads=2,
                 attention_head_dim=8, cross_attention_dim=16, audio_in_channels=4, audio_out_channels=4,
                 audio_num_attention_heads=2, audio_attention_head_dim=4, audio_cross_attention_dim=8, num_layers=2,
                 caption_channels=TINY_LTX2_TEXT, rope_type="split", perturbed_attn=True)


def ltx2_pipeline(*, seed: int = 0, device="cpu", dtype=torch.float32):
    """A tiny ``LTX2Pipeline`` without a text encoder (pass Gemma-sized ``prompt_embeds`` and masks:
    :func:`tiny_inputs`): the two-block transformer :data:`TINY_LTX2`, tiny text connectors (with
    learnable registers), a video VAE of 8x spatial and 4x temporal compression (two spatio-temporal
    levels), an audio VAE of 2 latent channels over 8 mel bins and a tiny vocoder, with per-channel
    latent statistics that are not the identity, and LTX-2's scheduler rule (:data:`LTX2_SCHEDULER`)."""
    import diffusers as d
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    torch.manual_seed(seed)
    transformer = d.LTX2VideoTransformer3DModel(**TINY_LTX2)
    connectors = LTX2TextConnectors(
        caption_channels=TINY_LTX2_TEXT, text_proj_in_factor=TINY_LTX2_LAYERS, video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8, video_connector_num_layers=1, video_connector_num_learnable_registers=4,
        audio_connector_num_attention_heads=4, audio_connector_attention_head_dim=8, audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=4, connector_rope_base_seq_len=32, rope_type="split")
    two = ("spatiotemporal", "spatiotemporal")
    vae = d.AutoencoderKLLTX2Video(
        latent_channels=4, block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1, 1), spatio_temporal_scaling=(True, True),
        decoder_spatio_temporal_scaling=(True, True), decoder_inject_noise=(False,) * 3, downsample_type=two,
        upsample_type=two, upsample_residual=(False, False), upsample_factor=(1, 1), patch_size=2,
        decoder_causal=False)
    audio_vae = d.AutoencoderKLLTX2Audio(base_channels=4, output_channels=2, ch_mult=(1,), num_res_blocks=1,
                                         latent_channels=2, resolution=32, mel_bins=8)
    vocoder = LTX2Vocoder(in_channels=2 * 8, hidden_channels=32, out_channels=2, upsample_kernel_sizes=[4, 4],
                          upsample_factors=[2, 2], resnet_kernel_sizes=[3], resnet_dilations=[[1, 3, 5]],
                          output_sampling_rate=16000)
    g = torch.Generator().manual_seed(seed + 5)
    for buffers in (vae, audio_vae):
        n = buffers.latents_mean.numel()
        buffers.latents_mean.copy_(torch.randn(n, generator=g) * 0.3)
        buffers.latents_std.copy_(torch.rand(n, generator=g) + 0.5)
    pipe = d.LTX2Pipeline(scheduler=d.FlowMatchEulerDiscreteScheduler(**LTX2_SCHEDULER), vae=vae, audio_vae=audio_vae,
                          text_encoder=None, tokenizer=None, connectors=connectors, transformer=transformer,
                          vocoder=vocoder)
    pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ltx2_pipeline_with_text(seed: int = 0):
    """The tiny ``LTX2Pipeline`` with a tiny random Gemma 3 (``Gemma3ForConditionalGeneration``: two
    layers of the connectors' width, so its three stacked hidden states are what the connectors read;
    a one-layer vision tower it never runs on text) and a word-level tokenizer: a whole pipeline that
    takes prompts and that ``save_pretrained``/``from_pretrained`` round-trip (``ralu generate`` writes
    clips with sound with it)."""
    from diffusers import LTX2Pipeline
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    pipe = ltx2_pipeline(seed=seed)
    torch.manual_seed(seed + 1)
    gemma = Gemma3ForConditionalGeneration(Gemma3Config(
        text_config=dict(hidden_size=TINY_LTX2_TEXT, intermediate_size=37, num_hidden_layers=TINY_LTX2_LAYERS - 1,
                         num_attention_heads=2, num_key_value_heads=1, head_dim=16, vocab_size=32, sliding_window=8,
                         max_position_embeddings=1024),
        vision_config=dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                           image_size=16, patch_size=8), mm_tokens_per_image=4))
    full = LTX2Pipeline(scheduler=pipe.scheduler, vae=pipe.vae, audio_vae=pipe.audio_vae, text_encoder=gemma,
                        tokenizer=word_tokenizer(1024), connectors=pipe.connectors, transformer=pipe.transformer,
                        vocoder=pipe.vocoder)
    full.set_progress_bar_config(disable=True)
    return full


def tiny_pipeline(model: str, *, seed: int = 0, device="cpu", dtype=torch.float32):
    """The text-to-image pipeline of ``model`` (one of :data:`TINY_MODELS`) with a one- or
    two-block transformer of the family's own classes, a small VAE of the family's class, the
    family's published scheduler rule, and no text encoders (pass embeddings: :func:`tiny_inputs`)."""
    import diffusers as d

    if model == "hunyuanvideo1.5-480p":
        return hunyuanvideo15_pipeline(seed=seed, device=device, dtype=dtype)
    if model == "qwen-image-2.1":
        return qwenimage21_pipeline(seed=seed, device=device, dtype=dtype)
    if model == "ltx-2":
        return ltx2_pipeline(seed=seed, device=device, dtype=dtype)
    if model.startswith("wan"):
        return wan_pipeline(experts=2 if model == "wan2.2-t2v-a14b" else 1, seed=seed, device=device, dtype=dtype,
                            flow_shift=12.0 if model == "wan2.2-t2v-a14b" else 3.0)
    if model in ("flux-dev", "flux-schnell"):
        pipe = flux_pipeline(guidance_embeds=model == "flux-dev", seed=seed, device=device, dtype=dtype)
    elif model == "sd3-medium":
        pipe = sd3_pipeline(seed=seed, device=device, dtype=dtype)
    else:
        torch.manual_seed(seed)
        sched = d.FlowMatchEulerDiscreteScheduler(**SCHEDULERS["flux2" if model.startswith("flux2") else model])
        none = dict(text_encoder=None, tokenizer=None)
        if model.startswith("flux2"):
            transformer = d.Flux2Transformer2DModel(
                patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=TINY_TEXT_DIM, timestep_guidance_channels=32,
                axes_dims_rope=(4, 4, 4, 4), guidance_embeds=model == "flux2-dev")
            vae = d.AutoencoderKLFlux2(block_out_channels=(8, 8, 8, 8), layers_per_block=1, latent_channels=4,
                                       norm_num_groups=4)
            g = torch.Generator().manual_seed(seed + 7)                # a BatchNorm with statistics to undo
            vae.bn.running_mean.copy_(torch.randn(vae.bn.num_features, generator=g) * 0.1)
            vae.bn.running_var.copy_(torch.rand(vae.bn.num_features, generator=g) + 0.5)
            if model == "flux2-dev":
                pipe = d.Flux2Pipeline(scheduler=sched, vae=vae, transformer=transformer, **none)
            else:
                pipe = d.Flux2KleinPipeline(scheduler=sched, vae=vae, transformer=transformer,
                                            is_distilled="base" not in model, **none)
        elif model == "qwen-image":
            transformer = d.QwenImageTransformer2DModel(
                patch_size=2, in_channels=64, out_channels=16, num_layers=1, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=TINY_TEXT_DIM, axes_dims_rope=(4, 6, 6))
            vae = d.AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
            pipe = d.QwenImagePipeline(scheduler=sched, vae=vae, transformer=transformer, **none)
        elif model in ("z-image", "z-image-turbo"):
            transformer = d.ZImageTransformer2DModel(
                all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=1, n_refiner_layers=1,
                n_heads=2, n_kv_heads=2, cap_feat_dim=TINY_TEXT_DIM, axes_dims=[4, 6, 6], axes_lens=[512, 64, 64])
            pipe = d.ZImagePipeline(scheduler=sched, vae=d.AutoencoderKL(**TINY_VAE), transformer=transformer, **none)
        elif model == "chroma":
            transformer = d.ChromaTransformer2DModel(
                patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=16,
                num_attention_heads=2, joint_attention_dim=TINY_TEXT_DIM, axes_dims_rope=(4, 6, 6),
                approximator_num_channels=8, approximator_hidden_dim=32, approximator_layers=1)
            pipe = d.ChromaPipeline(scheduler=sched, vae=d.AutoencoderKL(**TINY_VAE), transformer=transformer, **none)
        else:
            raise ValueError(f"model must be one of {', '.join(TINY_MODELS)}, got {model!r}")
        pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def qwenimage21_pipeline(*, text: bool = False, seed: int = 0, device="cpu", dtype=torch.float32):
    """A tiny ``QwenImage21Pipeline``: a two-block ``QwenImage21Transformer2DModel`` (8 latent
    channels, one latent pixel per token, ``causal_condition``), a small ``AutoencoderKLQwenImage21``
    (16x spatial, RGBA) with per-channel statistics to undo, the published scheduler rule, the
    text-only :func:`qwen3_vl_processor` the pipeline needs to be built, and with ``text`` a tiny
    random ``Qwen3VLForConditionalGeneration`` that encodes prompts (else pass embeddings)."""
    import diffusers as d

    torch.manual_seed(seed)
    C = 8
    transformer = d.QwenImage21Transformer2DModel(patch_size=1, in_channels=C, out_channels=C, num_layers=2,
                                                  attention_head_dim=16, num_attention_heads=2,
                                                  context_in_dim=TINY_TEXT_DIM, mlp_ratio=2, axes_dims_rope=(4, 6, 6))
    g = torch.Generator().manual_seed(seed + 7)
    vae = d.AutoencoderKLQwenImage21(base_dim=4, decoder_base_dim=4, z_dim=C, dim_mult=[1, 1, 1, 1, 1],
                                     num_res_blocks=1, attn_scales=[], temperal_downsample=[False, True, True, True],
                                     latents_mean=(torch.randn(C, generator=g) * 0.5).tolist(),
                                     latents_std=(torch.rand(C, generator=g) + 0.5).tolist())
    encoder = None
    if text:
        from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

        encoder = Qwen3VLForConditionalGeneration(Qwen3VLConfig(
            text_config=dict(vocab_size=64, hidden_size=TINY_TEXT_DIM, intermediate_size=16, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, head_dim=8,
                             rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[1, 1, 2])),
            vision_config=dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2,
                               out_hidden_size=TINY_TEXT_DIM, patch_size=16, spatial_merge_size=2,
                               temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0]))).eval()
    pipe = d.QwenImage21Pipeline(scheduler=d.FlowMatchEulerDiscreteScheduler(**SCHEDULERS["qwen-image-2.1"]), vae=vae,
                                 text_encoder=encoder, processor=qwen3_vl_processor(), transformer=transformer)
    pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def hunyuanvideo15_pipeline(*, text: bool = False, guidance_scale: float = 6.0, shift: float = 5.0,
                            target_size: int = 640, seed: int = 0, device="cpu", dtype=torch.float32):
    """A tiny ``HunyuanVideo15Pipeline``: a two-block ``HunyuanVideo15Transformer3DModel`` (8 latent
    channels, 17 in: latent, condition latent, mask; one latent pixel per token), a small
    ``AutoencoderKLHunyuanVideo15`` (16x spatial, 4x temporal), ``FlowMatchEulerDiscreteScheduler``
    with the published fixed ``shift`` (5 at 480p, 9 at 720p) and ``ClassifierFreeGuidance`` with
    ``guidance_scale`` (6; 1 for the CFG-distilled checkpoints). With ``text``, tiny random
    Qwen2.5-VL and ByT5 text encoders and their tokenizers (else pass embeddings)."""
    import diffusers as d

    torch.manual_seed(seed)
    C = 8
    transformer = d.HunyuanVideo15Transformer3DModel(
        in_channels=2 * C + 1, out_channels=C, num_attention_heads=2, attention_head_dim=16, num_layers=2,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=TINY_TEXT_DIM,
        text_embed_2_dim=16, image_embed_dim=16, rope_axes_dim=(4, 6, 6), target_size=target_size, task_type="t2v")
    vae = d.AutoencoderKLHunyuanVideo15(latent_channels=C, block_out_channels=(8, 8, 16, 16, 16), layers_per_block=1)
    encoders = dict(text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None)
    if text:
        from transformers import ByT5Tokenizer, Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel, T5Config, T5EncoderModel

        encoders = dict(
            text_encoder=Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig(
                vocab_size=64, hidden_size=TINY_TEXT_DIM, intermediate_size=16, num_hidden_layers=3,
                num_attention_heads=2, num_key_value_heads=2,
                rope_parameters=dict(rope_type="default", rope_theta=1e6, mrope_section=[2, 2, 4]))).eval(),
            tokenizer=qwen_chat_tokenizer(),
            text_encoder_2=T5EncoderModel(T5Config(vocab_size=384, d_model=16, d_ff=16, d_kv=8, num_layers=1,
                                                   num_heads=2, pad_token_id=0, eos_token_id=1)).eval(),
            tokenizer_2=ByT5Tokenizer())
    pipe = d.HunyuanVideo15Pipeline(transformer=transformer, vae=vae,
                                    scheduler=d.FlowMatchEulerDiscreteScheduler(shift=shift),
                                    guider=d.ClassifierFreeGuidance(guidance_scale=guidance_scale), **encoders)
    pipe.vision_num_semantic_tokens = 16     # the image-conditioned mode's tokens (SigLIP's 729): a tiny encoder's
    pipe = pipe.to(device) if dtype == torch.float32 else pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def chroma_pipeline_with_text(seed: int = 0):
    """The tiny ``ChromaPipeline`` with a tiny random T5 and a word-level tokenizer: a whole
    pipeline that takes prompts and that ``save_pretrained``/``from_pretrained`` round-trip."""
    from diffusers import ChromaPipeline
    from transformers import T5Config, T5EncoderModel

    pipe = tiny_pipeline("chroma", seed=seed)
    torch.manual_seed(seed + 1)
    t5 = T5EncoderModel(T5Config(vocab_size=20, d_model=TINY_TEXT_DIM, d_ff=37, d_kv=8, num_layers=1, num_heads=2,
                                 pad_token_id=0, eos_token_id=2))
    full = ChromaPipeline(scheduler=pipe.scheduler, vae=pipe.vae, transformer=pipe.transformer, text_encoder=t5,
                          tokenizer=word_tokenizer(512))
    full.set_progress_bar_config(disable=True)
    return full


def wan_pipeline_with_text(seed: int = 0, experts: int = 1):
    """The tiny ``WanPipeline`` (UniPC, Wan's published scheduler) with a tiny random UMT5 and a
    word-level tokenizer: a whole pipeline that takes prompts and that
    ``save_pretrained``/``from_pretrained`` round-trip (``ralu generate`` tests write clips with it)."""
    from diffusers import WanPipeline
    from transformers import UMT5Config, UMT5EncoderModel

    pipe = wan_pipeline(seed=seed, experts=experts, scheduler="unipc", flow_shift=3.0)
    torch.manual_seed(seed + 1)
    umt5 = UMT5EncoderModel(UMT5Config(vocab_size=20, d_model=TINY_TEXT_DIM, d_ff=37, d_kv=8, num_layers=1,
                                       num_heads=2, pad_token_id=0, eos_token_id=2))
    full = WanPipeline(tokenizer=word_tokenizer(512), text_encoder=umt5, vae=pipe.vae, scheduler=pipe.scheduler,
                       transformer=pipe.transformer, transformer_2=pipe.transformer_2,
                       boundary_ratio=pipe.config.boundary_ratio)
    full.set_progress_bar_config(disable=True)
    return full


def with_text(pipe, seed: int = 0):
    """``pipe``, a tiny FLUX.1 or Wan pipeline built without text encoders (:func:`conditioned_pipeline`'s),
    given the tiny text encoders and tokenizers of :func:`flux_pipeline_with_text` or
    :func:`wan_pipeline_with_text`: it then takes prompts, and ``ralu generate`` runs it saved."""
    name = type(pipe).__name__
    if name.startswith("Flux"):
        text = flux_pipeline_with_text(seed)
        parts = ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
    elif name.startswith("Wan"):
        text = wan_pipeline_with_text(seed)
        parts = ("text_encoder", "tokenizer")
    else:
        raise ValueError(f"with_text takes a FLUX.1 or Wan pipeline, got {name}")
    pipe.register_modules(**{k: getattr(text, k) for k in parts})
    return pipe


#: Image-conditioned pipelines :func:`conditioned_pipeline` builds (channel-concatenated conditions).
CONDITIONED_MODELS = ("flux-fill", "flux-control", "wan2.1-i2v", "wan2.1-flf2v", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b")

#: The tiny CLIP vision encoder of Wan 2.1 I2V: 32-pixel crops of 16-pixel patches, 5 tokens of width 32.
TINY_CLIP_VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
                        image_size=32, patch_size=16, projection_dim=32)


def conditioned_pipeline(model: str, *, seed: int = 0, device="cpu", dtype=torch.float32, scheduler: str = "euler"):
    """A tiny image-conditioned pipeline whose condition is concatenated to the transformer's
    input channels, no text encoders (pass embeddings: :func:`tiny_inputs`):

    - ``"flux-fill"``: ``FluxFillPipeline`` (input 64 latent + 64 masked-image + 256 mask values per token);
    - ``"flux-control"``: ``FluxControlPipeline`` (64 latent + 64 control-image values);
    - ``"wan2.1-i2v"``: ``WanImageToVideoPipeline`` with a CLIP vision encoder (``image_dim``) and
      36 input channels (16 latent + 4 mask + 16 condition), as Wan 2.1 I2V;
    - ``"wan2.1-flf2v"``: the same with the image embedder's positions for two images (first and last frame);
    - ``"wan2.2-i2v-a14b"``: two 36-channel experts switched at ``boundary_ratio`` 0.9, no CLIP;
    - ``"wan2.2-ti2v-5b"``: ``expand_timesteps`` (the first frame's latents replace the noise, per-token
      timesteps) with Wan 2.2's residual VAE (48 channels, 16x spatial with its 2x2 patching).

    The transformers are the tiny ones of :func:`flux_pipeline` and :func:`wan_pipeline` with the
    conditioned input widths; ``scheduler`` as :func:`wan_pipeline` takes it."""
    import diffusers as d

    if model not in CONDITIONED_MODELS:
        raise ValueError(f"model must be one of {', '.join(CONDITIONED_MODELS)}, got {model!r}")
    if model.startswith("flux"):
        base = flux_pipeline(seed=seed, device=device, dtype=dtype)
        torch.manual_seed(seed + 3)
        width = 384 if model == "flux-fill" else 128
        transformer = d.FluxTransformer2DModel(**{**TINY_FLUX, "in_channels": width, "out_channels": 64},
                                               guidance_embeds=True).to(device=device, dtype=dtype)
        cls = d.FluxFillPipeline if model == "flux-fill" else d.FluxControlPipeline
        pipe = cls(scheduler=base.scheduler, vae=base.vae, text_encoder=None, tokenizer=None, text_encoder_2=None,
                   tokenizer_2=None, transformer=transformer)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    experts = 2 if model == "wan2.2-i2v-a14b" else 1
    base = wan_pipeline(experts=experts, boundary_ratio=0.9, scheduler=scheduler, seed=seed,
                        flow_shift=5.0 if experts == 2 else 3.0)
    torch.manual_seed(seed + 3)
    inner = TINY_WAN["num_attention_heads"] * TINY_WAN["attention_head_dim"]
    extra, vae, encoders = {"in_channels": 36}, base.vae, {}
    if model in ("wan2.1-i2v", "wan2.1-flf2v"):
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

        side = TINY_CLIP_VISION["image_size"]
        encoders = dict(image_encoder=CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP_VISION)),
                        image_processor=CLIPImageProcessor(size={"shortest_edge": side},
                                                           crop_size={"height": side, "width": side}))
        tokens = (side // TINY_CLIP_VISION["patch_size"]) ** 2 + 1
        extra.update(image_dim=TINY_CLIP_VISION["hidden_size"], added_kv_proj_dim=inner,
                     pos_embed_seq_len=2 * tokens if model == "wan2.1-flf2v" else None)
    elif model == "wan2.2-ti2v-5b":
        z = 48
        g = torch.Generator().manual_seed(seed + 5)
        vae = d.AutoencoderKLWan(base_dim=8, z_dim=z, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True, True], is_residual=True, in_channels=12,
                                 out_channels=12, patch_size=2, scale_factor_spatial=16,
                                 latents_mean=(torch.randn(z, generator=g) * 0.3).tolist(),
                                 latents_std=(torch.rand(z, generator=g) + 0.5).tolist())
        extra = {"in_channels": z, "out_channels": z}
    make = lambda: d.WanTransformer3DModel(**{**TINY_WAN, **extra})  # noqa: E731
    transformer = make()
    transformer_2 = make() if experts == 2 else None
    pipe = d.WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, scheduler=base.scheduler,
                                     transformer=transformer, transformer_2=transformer_2,
                                     boundary_ratio=0.9 if experts == 2 else None,
                                     expand_timesteps=model == "wan2.2-ti2v-5b", **encoders)
    pipe = pipe.to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_image(height: int, width: int, seed: int = 0, mode: str = "RGB"):
    """A PIL image with structure for edge detectors (a few rectangles and a disc on a smooth
    gradient, colours from ``seed``), made in memory."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    img = np.stack([0.3 + 0.4 * x, 0.3 + 0.4 * y, 0.5 + 0.2 * x * y], axis=-1)
    for _ in range(3):
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        img[top:top + int(rng.integers(4, height // 2)), left:left + int(rng.integers(4, width // 2))] = rng.random(3)
    cy, cx, r = rng.integers(height // 4, 3 * height // 4), rng.integers(width // 4, 3 * width // 4), height // 6
    img[(np.mgrid[0:height, 0:width][0] - cy) ** 2 + (np.mgrid[0:height, 0:width][1] - cx) ** 2 < r * r] = rng.random(3)
    return Image.fromarray((img * 255).round().astype(np.uint8)).convert(mode)


def tiny_inputs(pipe, batch: int = 1, *, guided: bool = False, text_tokens: int = 8, seed: int = 1) -> dict:
    """Prompt embeddings (and masks) that fit ``pipe``'s transformer, as its pipeline takes them;
    with ``guided``, negative embeddings and the guidance setting that turns them on (the
    family's own: ``true_cfg_scale``, ``guidance_scale``)."""
    name = type(pipe).__name__
    g = torch.Generator().manual_seed(seed)
    dev, dt = pipe.transformer.device, pipe.transformer.dtype
    rand = lambda *shape: torch.randn(*shape, generator=g).to(dev, dt)  # noqa: E731

    def mask(b):   # the last image's prompt is two tokens shorter, as padding leaves it
        m = torch.ones(b, text_tokens, dtype=torch.bool, device=dev)
        m[-1, text_tokens - 2:] = False
        return m

    cfg = pipe.transformer.config
    if name in ("FluxFillPipeline", "FluxControlPipeline"):       # no true CFG: the distilled guidance only
        return prompt_embeds(pipe, batch, text_tokens, seed)
    if name == "FluxPipeline":
        out = prompt_embeds(pipe, batch, text_tokens, seed)
        if guided:
            neg = prompt_embeds(pipe, batch, text_tokens, seed + 1)
            out.update(negative_prompt_embeds=neg["prompt_embeds"],
                       negative_pooled_prompt_embeds=neg["pooled_prompt_embeds"], true_cfg_scale=3.0)
        return out
    if name == "StableDiffusion3Pipeline":
        return {**sd3_prompt_embeds(pipe, batch, text_tokens, seed, negative=guided),
                "guidance_scale": 4.0 if guided else 1.0}
    if name == "ChromaPipeline":
        out = dict(prompt_embeds=rand(batch, text_tokens, cfg.joint_attention_dim), prompt_attention_mask=mask(batch))
        if guided:
            out.update(negative_prompt_embeds=rand(batch, text_tokens, cfg.joint_attention_dim),
                       negative_prompt_attention_mask=mask(batch), guidance_scale=4.0)
        else:
            out["guidance_scale"] = 1.0
        return out
    if name in ("Flux2Pipeline", "Flux2KleinPipeline"):
        out = dict(prompt_embeds=rand(batch, text_tokens, cfg.joint_attention_dim))
        if name == "Flux2KleinPipeline" and not pipe.config.is_distilled:
            if guided:
                out.update(negative_prompt_embeds=rand(batch, text_tokens, cfg.joint_attention_dim), guidance_scale=4.0)
            else:
                out["guidance_scale"] = 1.0
        return out
    if name == "QwenImagePipeline":
        out = dict(prompt_embeds=rand(batch, text_tokens, cfg.joint_attention_dim), prompt_embeds_mask=mask(batch))
        if guided:
            out.update(negative_prompt_embeds=rand(batch, text_tokens, cfg.joint_attention_dim),
                       negative_prompt_embeds_mask=mask(batch), true_cfg_scale=4.0)
        return out
    if name == "ZImagePipeline":
        lengths = [text_tokens - (b % 3) for b in range(batch)]       # Z-Image drops padding: lengths differ
        out = dict(prompt_embeds=[rand(n, cfg.cap_feat_dim) for n in lengths])
        if guided:
            out.update(negative_prompt_embeds=[rand(max(n - 3, 1), cfg.cap_feat_dim) for n in lengths],
                       guidance_scale=4.0)
        else:
            out["guidance_scale"] = 0.0
        return out
    if name == "HunyuanVideo15Pipeline":
        glyphs = lambda b: torch.cat([mask(b), mask(b).new_zeros(b, 2)], dim=1)   # noqa: E731 (ByT5: mostly padding)
        out = dict(prompt_embeds=rand(batch, text_tokens, cfg.text_embed_dim), prompt_embeds_mask=mask(batch),
                   prompt_embeds_2=rand(batch, text_tokens + 2, cfg.text_embed_2_dim), prompt_embeds_mask_2=glyphs(batch))
        if guided:
            out.update(negative_prompt_embeds=rand(batch, text_tokens, cfg.text_embed_dim),
                       negative_prompt_embeds_mask=mask(batch).new_ones(batch, text_tokens),
                       negative_prompt_embeds_2=rand(batch, text_tokens + 2, cfg.text_embed_2_dim),
                       negative_prompt_embeds_mask_2=mask(batch).new_zeros(batch, text_tokens + 2))
        return out
    if name == "QwenImage21Pipeline":
        out = dict(prompt_embeds=rand(batch, text_tokens, cfg.context_in_dim), prompt_embeds_mask=mask(batch))
        if guided:
            out.update(negative_prompt_embeds=rand(batch, text_tokens + 2, cfg.context_in_dim),
                       negative_prompt_embeds_mask=mask(batch).new_ones(batch, text_tokens + 2), true_cfg_scale=3.0)
        return out
    if name in ("WanPipeline", "WanImageToVideoPipeline"):
        if cfg.image_dim is not None:      # Wan's cross-attention takes the last 512 tokens as the text's
            text_tokens = 512
        out = dict(prompt_embeds=rand(batch, text_tokens, cfg.text_dim))
        if guided:
            out.update(negative_prompt_embeds=rand(batch, text_tokens, cfg.text_dim), guidance_scale=4.0)
        else:
            out["guidance_scale"] = 1.0
        return out
    if name == "LTX2Pipeline":                   # Gemma's stacked hidden states and masks, left-padded
        width = pipe.connectors.config.caption_channels * pipe.connectors.config.text_proj_in_factor
        left = lambda b: mask(b).flip(1).long()  # noqa: E731
        out = dict(prompt_embeds=rand(batch, text_tokens, width), prompt_attention_mask=left(batch),
                   spatio_temporal_guidance_blocks=[1])      # the pipeline's default [28] lies past two blocks
        if guided:
            out.update(negative_prompt_embeds=rand(batch, text_tokens, width),
                       negative_prompt_attention_mask=left(batch))
        else:
            out.update(guidance_scale=1.0, audio_guidance_scale=1.0)
        return out
    raise ValueError(f"no tiny inputs for {name}")


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
