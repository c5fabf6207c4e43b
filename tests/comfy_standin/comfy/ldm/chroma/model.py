"""Stand-in for ComfyUI's Chroma (``comfy.ldm.chroma.model.Chroma``): FLUX's calling contract
(:mod:`comfy.ldm.flux.model`) without a pooled embedding or ``post_input`` patches, guidance 0;
a diffusers ``ChromaTransformer2DModel`` does the arithmetic."""

from ..flux.model import Flux


class Chroma(Flux):
    def forward(self, x, timestep, context, guidance=None, control=None, transformer_options={}, **kwargs):
        return super().forward(x, timestep, context, transformer_options={}, **kwargs)

    def call(self, img, t, context, txt_ids, img_ids, y, guidance, b):
        return self.transformer(hidden_states=img, timestep=t, encoder_hidden_states=context, txt_ids=txt_ids,
                                img_ids=img_ids, return_dict=False)[0]
