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


def _word_tokenizer(max_length):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "</s>"] + "a an the tiny puppy kitten cat dog high fiving photo of red blue".split()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   eos_token="</s>", model_max_length=max_length)


def tiny_flux_with_text(seed=0) -> FluxPipeline:
    """The tiny FLUX with tiny CLIP and T5 text encoders and word-level tokenizers."""
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    pipe = tiny_flux(seed=seed)
    torch.manual_seed(seed + 1)
    clip = CLIPTextModel(CLIPTextConfig(vocab_size=20, hidden_size=POOLED_DIM, intermediate_size=37,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                        pad_token_id=0, bos_token_id=1, eos_token_id=2))
    t5 = T5EncoderModel(T5Config(vocab_size=20, d_model=TEXT_DIM, d_ff=37, d_kv=8, num_layers=1, num_heads=2,
                                 pad_token_id=0, eos_token_id=2))
    full = FluxPipeline(scheduler=pipe.scheduler, vae=pipe.vae, transformer=pipe.transformer,
                        text_encoder=clip, tokenizer=_word_tokenizer(77), text_encoder_2=t5,
                        tokenizer_2=_word_tokenizer(512))
    full.set_progress_bar_config(disable=True)
    return full
