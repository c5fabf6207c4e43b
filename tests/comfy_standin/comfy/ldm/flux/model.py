"""Stand-in for ComfyUI's FLUX diffusion model (``comfy.ldm.flux.model.Flux``).

The calling contract: ``forward(x, timestep, context, y, guidance, transformer_options)`` with
a 4-D latent ``x``; the model packs 2x2 latent patches into tokens ``(channel, dy, dx)``, builds
image ids ``(0, row, col)`` from the latent's shape, lets the ``post_input`` patches of
``transformer_options["patches"]`` replace them (each gets and returns a dict with ``img``,
``txt``, ``img_ids``, ``txt_ids``; ids are per image, ``(B, L, 3)``), and returns the velocity
as a latent of ``x``'s shape. Here a diffusers ``FluxTransformer2DModel`` does the arithmetic,
one image per call (it takes one id table per call). ``calls`` records each call's image token
count and ids.
"""

import torch


class Flux(torch.nn.Module):
    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer
        self.calls = []

    def forward(self, x, timestep, context, y=None, guidance=None, transformer_options={}, **kwargs):
        B, C, H, W = x.shape
        img = x.view(B, C, H // 2, 2, W // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(B, H * W // 4, C * 4)
        rows, cols = torch.meshgrid(torch.arange(H // 2), torch.arange(W // 2), indexing="ij")
        ids = torch.stack([torch.zeros_like(rows), rows, cols], -1).reshape(1, -1, 3).float().expand(B, -1, -1)
        txt_ids = torch.zeros(B, context.shape[1], 3)
        args = {"img": img, "txt": context, "img_ids": ids, "txt_ids": txt_ids}
        for patch in transformer_options.get("patches", {}).get("post_input", []):
            args = patch(args)
        self.calls.append((img.shape[1], args["img_ids"]))
        out = torch.cat([self.transformer(hidden_states=img[b:b + 1], timestep=timestep[b:b + 1],
                                          guidance=None if guidance is None else guidance[b:b + 1],
                                          pooled_projections=y[b:b + 1], encoder_hidden_states=context[b:b + 1],
                                          txt_ids=args["txt_ids"][b], img_ids=args["img_ids"][b],
                                          return_dict=False)[0] for b in range(B)])
        return out.view(B, H // 2, W // 2, C, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)
