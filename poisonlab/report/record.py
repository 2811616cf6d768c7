"""What a centralized run records for its report beyond the accuracies: which classes the poison
touched, and a few clean vs poisoned examples as small PNGs.

The report is drawn from metrics.json alone (a report can be redrawn, and a sweep links to it), so
anything it shows must be recorded by the runner. Pixels are stored as tiny base64 PNGs (a few
hundred bytes for an 8x8 or 28x28 image), never as arrays of floats. Every count here is computed
from the poisoned dataset and its mask; nothing is estimated.
"""

from __future__ import annotations

import base64
import io

import torch

MAX_EXAMPLES = 8


def poison_classes(clean_y: torch.Tensor, poisoned_y: torch.Tensor, mask: torch.Tensor, num_classes: int) -> dict:
    """Per-class counts of the poisoned training rows.

    original: rows that existed in the clean training set, by their clean label (what the poison took);
    trained_as: every poisoned row by the label the poisoned model was trained with;
    added: poisoned rows appended after the clean set (external or clean-label poisons have no clean label).
    """
    n = len(clean_y)
    rows = torch.nonzero(mask).flatten()
    in_place, added = rows[rows < n], rows[rows >= n]
    return {"original": torch.bincount(clean_y[in_place], minlength=num_classes).tolist(),
            "trained_as": torch.bincount(poisoned_y[rows], minlength=num_classes).tolist(),
            "added": int(len(added))}


def png_b64(image: torch.Tensor) -> str | None:
    """A (c, h, w) image in [0, 1] with 1 or 3 channels as a base64 PNG string; None for other shapes."""
    from PIL import Image

    if image.dim() != 3 or image.shape[0] not in (1, 3):
        return None
    pixels = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).contiguous().numpy()
    buf = io.BytesIO()
    Image.fromarray(array, mode="L" if pixels.shape[0] == 1 else "RGB").save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def poisoned_examples(clean_x: torch.Tensor, clean_y: torch.Tensor, poisoned_x: torch.Tensor,
                      poisoned_y: torch.Tensor, mask: torch.Tensor) -> list[dict]:
    """Up to MAX_EXAMPLES poisoned training rows (lowest row numbers): the clean original (None for an
    appended row, which has none) next to the row the poisoned model was trained on, with both labels."""
    n = len(clean_y)
    out = []
    for row in torch.nonzero(mask).flatten()[:MAX_EXAMPLES].tolist():
        original = row < n
        out.append({"row": row, "label": int(clean_y[row]) if original else None,
                    "poisoned_label": int(poisoned_y[row]),
                    "clean": png_b64(clean_x[row]) if original else None, "poisoned": png_b64(poisoned_x[row])})
    return out


def triggered_examples(test_x: torch.Tensor, test_y: torch.Tensor, trig_x: torch.Tensor, trig_y: torch.Tensor,
                       target: int | tuple[int, ...], pred_poisoned: torch.Tensor, pred_clean: torch.Tensor) -> list[dict]:
    """Up to MAX_EXAMPLES triggered test inputs whose label is not the target, with both models' predictions.

    The clean input is paired only when the triggered set is the test set stamped row by row (same
    length and labels, as a patch or blend backdoor builds it); otherwise "clean" is None.
    """
    aligned = len(trig_y) == len(test_y) and torch.equal(trig_y, test_y)
    out = []
    wanted = (torch.full_like(trig_y, target) if isinstance(target, int)
              else torch.as_tensor(list(target), dtype=torch.long)[trig_y.long()])
    for i in torch.nonzero((wanted >= 0) & (wanted != trig_y)).flatten()[:MAX_EXAMPLES].tolist():
        out.append({"label": int(trig_y[i]), "clean": png_b64(test_x[i]) if aligned else None,
                    "triggered": png_b64(trig_x[i]), "predicted": int(pred_poisoned[i]),
                    "predicted_clean_model": int(pred_clean[i])})
    return out
