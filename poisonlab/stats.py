"""Robust statistics shared by detectors and aggregators: the median/MAD z-score.

z_i = (v_i - median(r)) / (1.4826 * MAD(r)), MAD(r) = median_j |r_j - median(r)|, with r the
reference values (default: v itself). 1.4826 = 1 / Phi^-1(3/4) makes 1.4826 * MAD a consistent
estimator of the standard deviation under a normal distribution (Hampel 1974; Rousseeuw & Croux,
"Alternatives to the Median Absolute Deviation", JASA 1993). Neural Cleanse (Wang et al., S&P 2019)
calls the signed version of this z the anomaly index.
"""

from __future__ import annotations

import torch

MAD_TO_STD = 1.4826      # 1 / Phi^-1(3/4): MAD -> standard deviation under normality
MEAN_AD_TO_STD = 1.2533  # sqrt(pi / 2): mean absolute deviation -> standard deviation under normality


def robust_z(values: torch.Tensor, reference: torch.Tensor | None = None, *,
             floor: float | None = None) -> torch.Tensor:
    """(values - median) / (1.4826 MAD) with the median and MAD of reference (default: values).

    A zero MAD (half the reference equal): with ``floor``, the scale is clamped to it (Neural
    Cleanse's 1e-12: anything off the median is an extreme outlier); without, the scale falls back to
    1.2533 * mean absolute deviation, and z = 0 when that is 0 too. An empty reference gives z = 0.
    Computed in the dtype of values (torch.median takes the lower middle value for an even count).
    """
    ref = values if reference is None else reference
    if ref.numel() == 0:
        return torch.zeros_like(values)
    med = ref.median()
    scale = MAD_TO_STD * (ref - med).abs().median()
    if floor is not None:
        return (values - med) / scale.clamp_min(floor)
    if not bool(scale > 0):
        scale = MEAN_AD_TO_STD * (ref - med).abs().mean()
    if not bool(scale > 0):
        return torch.zeros_like(values)
    return (values - med) / scale


def anomaly_index(values: torch.Tensor, floor: float = 1e-12) -> torch.Tensor:
    """Neural Cleanse's signed anomaly index (median - v) / (1.4826 MAD) in float64: positive below the median."""
    return 0.0 - robust_z(values.double(), floor=floor)
