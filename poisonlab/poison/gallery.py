"""Gallery: clean and triggered samples side by side, rendered to PNG with matplotlib (Agg backend)."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import torch
from poisonlab.rundir import atomic_write_bytes


def _show(ax, img: torch.Tensor) -> None:
    img = img.detach().clamp(0, 1)
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def render_gallery(clean: torch.Tensor, triggered: torch.Tensor, path: str | os.PathLike | None = None,
                   titles: Sequence[str] | None = None) -> bytes:
    """Two rows (clean above, triggered below) of n (c, h, w) images; writes path atomically; returns PNG bytes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    if clean.shape != triggered.shape or clean.dim() != 4:
        from poisonlab.errors import DataError

        raise DataError(f"gallery needs two (n, c, h, w) batches of one shape; got {tuple(clean.shape)}"
                        f" and {tuple(triggered.shape)}")
    n = clean.shape[0]
    fig = Figure(figsize=(1.3 * n + 0.6, 3.0))
    axes = fig.subplots(2, n, squeeze=False)
    for i in range(n):
        _show(axes[0][i], clean[i])
        _show(axes[1][i], triggered[i])
        if titles is not None and i < len(titles):
            axes[0][i].set_title(str(titles[i]), fontsize=8)
    axes[0][0].set_ylabel("clean", fontsize=8)
    axes[1][0].set_ylabel("triggered", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = buf.getvalue()
    if path is not None:
        atomic_write_bytes(path, data)
    return data
