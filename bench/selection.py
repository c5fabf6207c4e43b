"""Overlap of the "edges" and "authors" token selections on natural and synthetic images.

    python bench/selection.py

For each image and upsampled fraction: the share of the tokens chosen by the default
"edges" policy that the authors' rule chooses too, and the share of tokens the authors'
rule can tell apart at all (tokens with at least one edge pixel; the rest are ordered by
tie-break noise).
"""

from __future__ import annotations

import torch

from ralu_torch.analysis.selection import agreement, natural_images, synthetic_images
from ralu_torch.edges import authors_edge_map, edge_counts


def main():
    print("| image | size | tokens with authors' edges | overlap r = 0.1 | overlap r = 0.3 |")
    print("|---|---|---|---|---|")
    for name, img in {**natural_images(), **synthetic_images()}.items():
        counts = edge_counts(authors_edge_map(img), 16)
        edged = float((counts > 0).float().mean())
        row = [agreement(img, r) for r in (0.1, 0.3)]
        size = f"{img.shape[-2]}x{img.shape[-1]}"
        print(f"| {name} | {size} | {edged:.2f} | {row[0]:.2f} | {row[1]:.2f} |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
