"""UKD's registration with the harness (``models.registry``): the click-adaptive teacher and the
two students, their config, and the pseudo-label column the students train on.

Xu et al., WWW 2022 (``models/ukd/README.md``).
"""

from __future__ import annotations

from models import registry
from models.ukd.config import UKDConfig
from models.ukd.student import (PSEUDO_LABEL_MODELS, UKDBaseStudent, UKDStudent,
                                training_label_columns)
from models.ukd.teacher import UKDTeacher

MODELS = {"ukd_teacher": UKDTeacher, "ukd": UKDStudent, "ukd_base": UKDBaseStudent}


def build_ukd(name, features, config, targets, seed=0):
    """The teacher or a student (``seed`` is unused)."""
    return MODELS[name](features, config, targets)


FAMILY = registry.register(registry.ModelFamily(
    names={"ukd_teacher": "UKD's click-adaptive teacher (gradient-reversal discriminator)",
           "ukd": "UKD's student with the uncertainty-weighted distillation",
           "ukd_base": "UKD's base student (distillation weight 1, no KL term)"},
    build=build_ukd, configs=(UKDConfig,), label_columns=training_label_columns,
    pseudo_labelled=PSEUDO_LABEL_MODELS))
