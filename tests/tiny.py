"""Tiny random FLUX pipeline built from configs (no downloads) for the sampler tests."""

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

TEXT_DIM, POOLED_DIM, TEXT_TOKENS = 32, 32, 8

FLUX_DEV_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                          base_image_seq_len=256, max_image_seq_len=4096)


def tiny_flux(guidance_embeds=True, seed=0, dtype=torch.float32) -> FluxPipeline:
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=TEXT_DIM,
                                         pooled_projection_dim=POOLED_DIM, guidance_embeds=guidance_embeds,
                                         axes_dims_rope=(4, 6, 6))
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=1, norm_num_groups=4, use_quant_conv=False, use_post_quant_conv=False,
                        scaling_factor=0.3611, shift_factor=0.1159)
    sched = FlowMatchEulerDiscreteScheduler(**(FLUX_DEV_SCHEDULER if guidance_embeds else dict(shift=1.0)))
    pipe = FluxPipeline(scheduler=sched, vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(dtype=dtype)


def embeds(batch=1, seed=1):
    g = torch.Generator().manual_seed(seed)
    return dict(prompt_embeds=torch.randn(batch, TEXT_TOKENS, TEXT_DIM, generator=g),
                pooled_prompt_embeds=torch.randn(batch, POOLED_DIM, generator=g))
