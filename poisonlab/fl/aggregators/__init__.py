"""Robust aggregation rules: ``get(name, **params)`` builds one, ``chain(...)`` composes them.

Every rule maps (updates (k, d), weights (k,), ctx=None) to an Aggregate(update, selected, scores,
info, state); see docs/aggregators.md for the catalog (formula, paper, what selected/scores mean)
and how to add a rule. ``get`` returns the bare rule; a config's rule is ``build_rule(name, params)``
= ``chain(nonfinite_guard(policy), rule)`` so that NaN/Inf never reach the output.

    >>> rule = get("trimmed_mean", beta=0.1)
    >>> rule = chain(norm_clip(5.0), trimmed_mean(beta=0.1))
"""

from __future__ import annotations

from poisonlab.fl.aggregators.arc import arc
from poisonlab.fl.aggregators.autogm import autogm
from poisonlab.fl.aggregators.bucketing import bucketing
from poisonlab.fl.aggregators.caf import caf
from poisonlab.fl.aggregators.dnc import dnc
from poisonlab.fl.aggregators.gm_of_means import gm_of_means
from poisonlab.fl.aggregators.mda import mda
from poisonlab.fl.aggregators.meamed import meamed
from poisonlab.fl.aggregators.monna import monna
from poisonlab.fl.aggregators.nnm import nnm
from poisonlab.fl.aggregators.smea import smea
from poisonlab.fl.aggregators.auditing import audited, robust_z
from poisonlab.fl.aggregators.base import Rule
from poisonlab.fl.aggregators.build import build_chain, build_rule, check_rule_params
from poisonlab.fl.aggregators.bulyan import bulyan
from poisonlab.fl.aggregators.centered_clipping import centered_clipping
from poisonlab.fl.aggregators.chain import chain
from poisonlab.fl.aggregators.clipping import dp_gaussian, norm_clip
from poisonlab.fl.aggregators.flame import flame
from poisonlab.fl.aggregators.fltrust import fltrust
from poisonlab.fl.aggregators.foolsgold import foolsgold
from poisonlab.fl.aggregators.geometric_median import geometric_median
from poisonlab.fl.aggregators.krum import krum, multi_krum, pairwise_sq_distances
from poisonlab.fl.aggregators.mean import mean
from poisonlab.fl.aggregators.median import median, trimmed_mean
from poisonlab.fl.aggregators.nonfinite import nonfinite_guard
from poisonlab.fl.aggregators.registry import AGGREGATORS
from poisonlab.fl.aggregators.validation import validation
from poisonlab.fl.aggregators.adaptive_clipping import dp_adaptive_client, dp_adaptive_clipping
from poisonlab.fl.aggregators.clustering import clipped_clustering, clustering, majority_cluster
from poisonlab.fl.aggregators.local_dp import local_dp
from poisonlab.fl.aggregators.residual_reweight import residual_reweight
from poisonlab.fl.aggregators.sign_vote import robust_lr, signsgd_vote
from poisonlab.fl.aggregators.signguard import signguard
from poisonlab.fl.aggregators.three_sigma import three_sigma
from poisonlab.fl.aggregators.auror import auror
from poisonlab.fl.aggregators.crfl import crfl
from poisonlab.fl.aggregators.deepsight import deepsight
from poisonlab.fl.aggregators.fl_wbc import fl_wbc
from poisonlab.fl.aggregators.flanders import flanders
from poisonlab.fl.aggregators.fldetector import fldetector
from poisonlab.fl.aggregators.freqfed import freqfed
from poisonlab.fl.aggregators.lazy_workers import lazy_workers


def get(name: str, **params) -> Rule:
    """Build the named rule with its parameters (the bare rule: no non-finite guard; see build_rule)."""
    return AGGREGATORS.get(name, **params)


__all__ = ["AGGREGATORS", "Rule", "audited", "build_chain", "build_rule", "bulyan", "centered_clipping", "chain",
           "check_rule_params", "dp_gaussian", "flame", "fltrust", "foolsgold", "geometric_median", "get", "krum",
           "mean", "median", "multi_krum", "nonfinite_guard", "norm_clip", "pairwise_sq_distances", "robust_z",
           "trimmed_mean", "validation"]
__all__ += ["arc", "autogm", "bucketing", "caf", "dnc", "gm_of_means", "mda", "meamed", "monna", "nnm", "smea"]
__all__ += ["clipped_clustering", "clustering", "dp_adaptive_client", "dp_adaptive_clipping", "local_dp",  # rules2
            "majority_cluster", "residual_reweight", "robust_lr", "signguard", "signsgd_vote", "three_sigma"]
__all__ += ["auror", "crfl", "deepsight", "fl_wbc", "flanders", "fldetector", "freqfed", "lazy_workers"]  # stateful detectors (issue 21)
