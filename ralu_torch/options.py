"""The choices of the adapter, defined once and free of torch (the command line reads them
before torch is imported)."""

#: How an upsampled token's values fill its children: nearest upsampling of the latent (the
#: paper) or whole packed tokens repeated (the authors' code).
UPSAMPLE_MODES = ("latent", "token")
#: Noise variance of tokens a transition leaves at their resolution: ``1 - c`` (exact) or 1 (authors).
KEPT_NOISE = ("exact", "unit")
#: Built-in selection policies (:mod:`ralu_torch.selection`).
SELECTIONS = ("edges", "authors", "random")
#: Selection policies of image-conditioned pipelines only: the condition image's edges.
CONDITION_SELECTIONS = ("condition",)
#: ``output_type`` values, as diffusers pipelines take them.
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
#: Weight dtypes of the command line.
DTYPES = ("bfloat16", "float16", "float32")
#: ``ralu generate --offload``: none, diffusers' model CPU offload, or its sequential (layer by layer) offload.
OFFLOAD = ("none", "model", "sequential")
