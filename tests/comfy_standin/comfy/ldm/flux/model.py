"""Stand-in for ComfyUI's FLUX diffusion model (``comfy.ldm.flux.model.Flux``).

The calling contract: ``forward(x, timestep, context, y, guidance, transformer_options)`` with
a 4-D latent ``x``; the model packs 2x2 latent patches into tokens ``(channel, dy, dx)``, builds
image ids ``(0, row, col)`` from the latent's shape, lets the ``post_input`` patches of
``transformer_options["patches"]`` replace them, evaluates its rotary embedder ``pe_embedder``
on the text ids followed by the image ids, and returns the velocity as a latent of ``x``'s
shape. Here a diffusers ``FluxTransformer2DModel`` does the arithmetic on the ids the embedder
handed on (:mod:`comfy.ldm.standin`), one image per call. ``calls`` records each call's image
token count and image ids.
"""

import torch

from ralu_torch.tokens import pack, unpack

from ..standin import HandOnIds, image_ids, per_image


class Flux(torch.nn.Module):
    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer
        self.pe_embedder = HandOnIds()
        self.calls = []

    def forward(self, x, timestep, context, y=None, guidance=None, transformer_options={}, **kwargs):
        B, C, H, W = x.shape
        img, ids = pack(x), image_ids(H // 2, W // 2, B)
        txt_ids = torch.zeros(B, context.shape[1], 3)
        args = {"img": img, "txt": context, "img_ids": ids, "txt_ids": txt_ids}
        for patch in transformer_options.get("patches", {}).get("post_input", []):
            args = patch(args)
        pe = self.pe_embedder(torch.cat([args["txt_ids"], args["img_ids"]], dim=1))
        T = context.shape[1]
        self.calls.append((img.shape[1], pe[:, T:].clone()))
        out = per_image(lambda b: self.call(img[b:b + 1], timestep[b:b + 1], context[b:b + 1], pe[b, :T], pe[b, T:],
                                            y, guidance, b), B)
        return unpack(out, (H // 2, W // 2))

    def call(self, img, t, context, txt_ids, img_ids, y, guidance, b):
        return self.transformer(hidden_states=img, timestep=t, guidance=None if guidance is None else guidance[b:b + 1],
                                pooled_projections=y[b:b + 1], encoder_hidden_states=context, txt_ids=txt_ids,
                                img_ids=img_ids, return_dict=False)[0]
