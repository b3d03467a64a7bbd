"""AutoHERI's stages behind ``python -m models.train --model autoheri``: search, derive,
retrain from scratch.

1. **Search** (``RUN/search/``): the searchable network (every candidate edge gated by
   ``p = sigmoid(a / T)``) trains for ``autoheri_search_fraction`` of the run's planned steps,
   with the run's learning rate and schedule for the weights and Adam at ``autoheri_edge_lr``
   for the edge logits: jointly on the training split, or bi-level: the weights on train and
   the edges on the validation day's first half (file order; never the test day), one edge
   step per ``autoheri_bilevel_every`` weight steps.
2. **Derive**: threshold or top-k on the final probabilities; ``RUN/autoheri_architecture.json``
   (every candidate with its probability, the kept set, the settings) and ``.png``.
3. **Retrain**: the derived network (kept edges with gate 1, the others not built) from a
   fresh initialisation, in ``RUN`` like any harness run.

Each stage checkpoints; ``--resume`` continues whichever stage was interrupted (a finished
search is never redone: the architecture file marks it done).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace
from typing import Iterator, Optional

import numpy as np

from models.autoheri.architecture import Architecture, derive_edges
from models.autoheri.config import AutoHERIConfig
from models.trainer import Trainer
from preprocessing.processed import ProcessedData

ARCHITECTURE_JSON = "autoheri_architecture.json"
ARCHITECTURE_PNG = "autoheri_architecture.png"
SEARCH_DIR = "search"


def search_settings(model_config) -> dict:
    """The ``autoheri_*`` fields (and the CTCART weight) recorded with an architecture."""
    return model_config.family(AutoHERIConfig).settings()


def search_train_config(train_config, model_config, rows: int):
    """The search stage's loop settings: the run's, stopped after ``autoheri_search_epochs``
    epochs or, without them, ``autoheri_search_fraction`` of the run's planned steps (the
    cosine schedule, if any, spans the search)."""
    steps_per_epoch = -(-rows // train_config.batch_size)
    planned = train_config.epochs * steps_per_epoch
    if train_config.max_steps:
        planned = min(planned, train_config.max_steps)
    options = model_config.family(AutoHERIConfig)
    if options.search_epochs:
        steps = max(1, math.ceil(options.search_epochs * steps_per_epoch))
        if train_config.max_steps:
            steps = min(steps, train_config.max_steps)
    else:
        steps = max(1, math.ceil(options.search_fraction * planned))
    return replace(train_config, epochs=max(1, -(-steps // steps_per_epoch)), max_steps=steps)


class SearchTrainer(Trainer):
    """The harness loop on the searchable network, with the edge optimizer (checkpointed with
    the model) and, for the bi-level search, an edge step on a held-out batch after every
    ``autoheri_bilevel_every`` weight steps."""

    def __init__(self, data, search_dir, seed, model_config, train_config, progress=True):
        import tensorflow as tf

        from models.data import split_dataset
        super().__init__("autoheri", data, search_dir, seed, model_config, train_config,
                         progress)
        options = model_config.family(AutoHERIConfig)
        with self.strategy.scope():
            self.model.edge_optimizer = tf.keras.optimizers.Adam(options.edge_lr)
        self.edge_steps = 0
        if options.search == "bilevel":
            self.heldout_ds = split_dataset(self.data, "valid",
                                            self.valid_ds.schema.column_names)
            self._edge_batches: Optional[Iterator] = None
            weight_step = self._train_step
            edge_step = tf.function(self.model.edge_step, reduce_retracing=True)

            def step(x, y):
                loss = weight_step(x, y)
                if (int(self.step) + 1) % options.bilevel_every == 0:
                    edge_step(next(self._heldout()))
                    self.edge_steps += 1
                return loss

            self._train_step = step

    def _heldout(self) -> Iterator:
        """Batches of the validation day's first half (file order), cycled; after a restart it
        continues where the edge steps had got to."""
        if self._edge_batches is None:
            self._edge_batches = self._cycle_first_half()
        return self._edge_batches

    def _cycle_first_half(self) -> Iterator:
        from models.data import batches
        size = self.tcfg.batch_size
        n = max(1, (self.heldout_ds.num_rows // 2) // size)
        position = (int(self.step) // self.mcfg.family(AutoHERIConfig).bilevel_every) % n
        while True:
            for k, (x, y) in enumerate(batches(self.heldout_ds, size, shuffle=False,
                                               skip=position)):
                if position + k >= n:
                    break
                yield x, y
            position = 0

    def _build(self):
        super()._build()
        self.model.edge_optimizer.build([self.model.edge_logits])


def search_and_derive(data, run_dir: str, seed: int, model_config, train_config,
                      resume: bool = False, progress: bool = True) -> Architecture:
    """Stages 1 and 2: search in ``RUN/search`` (resumed from its checkpoint with ``resume``),
    derive, write ``autoheri_architecture.json`` / ``.png``; returns the architecture. With
    ``resume`` and the JSON already written, the search is not run again."""
    from models.autoheri.plot import plot_architecture
    path = os.path.join(run_dir, ARCHITECTURE_JSON)
    if resume and os.path.exists(path):
        return Architecture.load(path)
    search_dir = os.path.join(run_dir, SEARCH_DIR)
    data = ProcessedData.open(data)
    tcfg = search_train_config(train_config, model_config, data.rows("train"))
    trainer = SearchTrainer(data, search_dir, seed, model_config, tcfg, progress)
    started = time.perf_counter()
    result = trainer.fit(resume=resume)
    model = trainer.model
    probabilities = model.edge_probabilities().numpy().astype(np.float64)
    mcfg, options = model_config, model_config.family(AutoHERIConfig)
    kept = derive_edges(model.candidates, probabilities, options.derive, options.threshold,
                        options.top_k)
    arch = Architecture(
        "autoheri", model.tasks, tuple(mcfg.tower_units), list(model.candidates), kept,
        probabilities.tolist(), model.edge_logits.numpy().astype(np.float64).tolist(),
        search_settings(mcfg),
        {"steps": result["steps"], "edge_steps": trainer.edge_steps,
         "seconds": time.perf_counter() - started,
         "samples_per_second": result["samples_per_second"],
         "initial_probability": options.edge_init,
         "mean_abs_probability_change": float(np.mean(np.abs(probabilities
                                                             - options.edge_init)))})
    arch.save(path)
    plot_architecture(arch, os.path.join(run_dir, ARCHITECTURE_PNG))
    return arch


def write_fixed_architecture(model_name: str, model, model_config, run_dir: str) -> Architecture:
    """Record an ablation's fixed edges (no probabilities) as ``autoheri_architecture.json``
    and ``.png``, so that every AutoHERI-family run says which edges it trained."""
    from models.autoheri.plot import plot_architecture
    arch = Architecture(model_name, model.tasks, tuple(model_config.tower_units),
                        list(model.candidates), list(model.edges),
                        settings=search_settings(model_config))
    arch.save(os.path.join(run_dir, ARCHITECTURE_JSON))
    plot_architecture(arch, os.path.join(run_dir, ARCHITECTURE_PNG))
    return arch
