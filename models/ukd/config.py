"""UKD's options (``model: {ukd: {...}}`` in a YAML config; the flat ``ukd_*`` keys of earlier
releases map here).

Xu et al., "UKD: Debiasing Conversion Rate Estimation via Uncertainty-regularized Knowledge
Distillation", WWW 2022.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from common.params import check_param
from models.config import FamilyConfig

SCHEDULE_NAMES = ("dann", "constant")
#: How the two heads' disagreement ``u`` is measured (``UKDConfig.uncertainty``).
UNCERTAINTY_NAMES = ("kl", "logit")
#: How ``lam`` sets the distillation weight's sharpness (``UKDConfig.lambda_mode``).
LAMBDA_MODES = ("absolute", "relative")


@dataclass(frozen=True)
class UKDConfig(FamilyConfig):
    """The teacher's network and adversary, the students' distillation.

    Args:
        representation_units: hidden units of the teacher's representation ``T_f``.
        head_units: hidden units of the teacher's CVR head and click discriminator.
        adversarial_weight: the largest weight of the reversed discriminator gradient.
        adversarial_schedule: ``dann`` (the weight rises as ``2 / (1 + exp(-10 t)) - 1`` over
            the run's fraction ``t`` of planned steps) or ``constant``.
        alpha: weight of the student's distillation on unclicked rows.
        gamma: weight of the student's CTR loss.
        lam: the uncertainty's sharpness lambda in the distillation weight
            ``exp(-lambda * u)`` (a third-party reimplementation used 100; flat name
            ``ukd_lambda``); with ``lambda_mode: relative`` it is ``lambda * median(u)``.
        kl_weight: weight of the regulariser ``u`` on unclicked rows (our choice: 1).
        head_dropout: dropout rate in front of each of the student's two CVR heads.
        uncertainty: ``kl`` (the paper's ``KL(p || p')`` of the two heads, which scales with
            ``p (1 - p)``, so it tracks the pCVR level) or ``logit`` (our option:
            ``(logit p - logit p')^2``, level-free).
        lambda_mode: ``absolute`` (``lambda = lam``) or ``relative`` (our option:
            ``lambda = lam / median(u)`` over the batch's unclicked rows, so that ``lam`` is
            the weight's exponent at the median disagreement: ``exp(-lam)`` there; a search
            grid of {1, 3, 10} then means something whatever the scale of ``u``).
    """

    KEY = "ukd"
    LEGACY = {"ukd_lambda": "lam"}  # the other fields: ukd_<field>
    representation_units: Tuple[int, ...] = (128, 64)
    head_units: Tuple[int, ...] = (32,)
    adversarial_weight: float = 1.0
    adversarial_schedule: str = "dann"
    alpha: float = 0.5
    gamma: float = 0.2
    lam: float = 100.0
    kl_weight: float = 1.0
    head_dropout: float = 0.1
    uncertainty: str = "kl"
    lambda_mode: str = "absolute"

    def __post_init__(self):
        for name in ("representation_units", "head_units"):
            units = tuple(getattr(self, name))
            object.__setattr__(self, name, units)
            check_param(len(units) >= 1 and all(u >= 1 for u in units), f"ukd_{name}",
                        "a non-empty list of positive ints", units)
        check_param(self.adversarial_weight >= 0, "ukd_adversarial_weight", ">= 0",
                    self.adversarial_weight)
        check_param(self.adversarial_schedule in SCHEDULE_NAMES, "ukd_adversarial_schedule",
                    f"one of {', '.join(SCHEDULE_NAMES)}", self.adversarial_schedule)
        for name, flat in (("alpha", "ukd_alpha"), ("gamma", "ukd_gamma"),
                           ("lam", "ukd_lambda"), ("kl_weight", "ukd_kl_weight")):
            check_param(getattr(self, name) >= 0, flat, ">= 0", getattr(self, name))
        check_param(0.0 <= self.head_dropout < 1.0, "ukd_head_dropout", "in [0, 1)",
                    self.head_dropout)
        check_param(self.uncertainty in UNCERTAINTY_NAMES, "ukd_uncertainty",
                    f"one of {', '.join(UNCERTAINTY_NAMES)}", self.uncertainty)
        check_param(self.lambda_mode in LAMBDA_MODES, "ukd_lambda_mode",
                    f"one of {', '.join(LAMBDA_MODES)}", self.lambda_mode)
