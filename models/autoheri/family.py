"""AutoHERI's registration with the harness (``models.registry``): the searched model and its
ablations, their config, and the search-and-derive stage that ``python -m models.train --model
autoheri`` runs before it retrains the derived network.

Wei et al., CIKM 2021 (``models/autoheri/README.md``).
"""

from __future__ import annotations

import os

from models import registry
from models.autoheri.config import AutoHERIConfig
from models.autoheri.model import AUTOHERI_MODELS, build_autoheri
from models.autoheri.search import (ARCHITECTURE_JSON, ARCHITECTURE_PNG, SEARCH_DIR,
                                    search_and_derive, write_fixed_architecture)


def prepare(name, data, run_dir, seed, model_config, train_config, resume, progress
            ) -> registry.Prepared:
    """``autoheri``: search and derive first (resumed if interrupted), then hand the trainer
    the derived network; an ablation: record its fixed architecture once it is built."""
    if name != "autoheri":
        return registry.Prepared(after_build=lambda model, run: write_fixed_architecture(
            name, model, model_config, run))
    architecture = search_and_derive(data, run_dir, seed, model_config, train_config, resume,
                                     progress)

    def factory(features, config, targets):
        return build_autoheri("autoheri", features, config, targets, edges=architecture.kept)

    # resumed after its search but before the retrain's first checkpoint: start the retrain
    own_checkpoint = os.path.exists(os.path.join(run_dir, "checkpoints", "checkpoint"))
    return registry.Prepared(factory=factory, record={"search": architecture.search},
                             resume_training=own_checkpoint)


FAMILY = registry.register(registry.ModelFamily(
    names=dict(AUTOHERI_MODELS), build=build_autoheri, configs=(AutoHERIConfig,),
    prepare=prepare, stale_files=(SEARCH_DIR, ARCHITECTURE_JSON, ARCHITECTURE_PNG)))
