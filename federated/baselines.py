"""The single-process arms a federated run is judged against, trained by the same step.

- ``advertiser_only``: the advertiser's harness model on its own columns (no media signal).
- ``centralized``: the federated model itself (the media bottom network feeding the harness
  model) trained with every column of both parties in one process: the embedding and its
  gradient pass in memory, without wire, dtype cast, DP or gradient perturbation. The upper
  bound of the federated run: what the same model reaches when privacy allows pooling the data.
- ``centralized_flat``: the harness model given every column in its one input layer (the
  ``media_*`` columns embedded and concatenated like the others, no bottom network).

Both train on the samples the parties share (the intersection, found here by a plain key join:
these arms are the experimenter's yardsticks, not parties), in a shuffled order from the same
seed, with the batch size, epochs, optimizer and rate of the federated run, and are scored on
the same test samples. ``samples_per_second`` of ``centralized`` is the baseline of the
federated throughput benchmark.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import numpy as np

from federated.parties import PartyData
from federated.training import BottomTrainer, TopTrainer, TrainingOrder
from models.config import ModelConfig, TrainConfig

ARMS = ("advertiser_only", "centralized", "centralized_flat")
#: Advertiser columns the evaluation reads besides the predictions (when the data has them).
CONTEXT = ("click", "purchase", "purchase_counterfactual", "p_click", "p_purchase_given_click",
           "user_id", "app_id", "category_id")


@dataclass
class JoinedSplit:
    """File rows of both parties' shared samples, in one order (sorted by key)."""

    media_rows: np.ndarray
    advertiser_rows: np.ndarray

    @classmethod
    def join(cls, media: PartyData, advertiser: PartyData) -> "JoinedSplit":
        """The plain key join of two parties' splits (for the single-process arms)."""
        m_order, a_order = np.argsort(media.keys), np.argsort(advertiser.keys)
        common, mi, ai = np.intersect1d(media.keys[m_order], advertiser.keys[a_order],
                                        assume_unique=True, return_indices=True)
        return cls(m_order[mi], a_order[ai])

    def __len__(self) -> int:
        return len(self.media_rows)


def label_rates(labels: Dict[str, np.ndarray]) -> Dict[str, float]:
    """Base rates for the prior bias: CTR over rows, the others over clicked rows."""
    click = labels["click"].astype(np.float64)
    rates = {"click": float(click.mean())}
    for t, y in labels.items():
        if t != "click" and click.sum() > 0:
            rates[t] = float((y * click).sum() / click.sum())
    return rates


def evaluation_frame(advertiser: PartyData, rows: np.ndarray,
                     predictions: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Labels, ground truth and field ids of ``rows`` with the predictions: the input of
    ``models.metrics.evaluate_predictions``."""
    from models.predict import aligned_frame
    have = [c for c in CONTEXT if c in advertiser.table.column_names]
    return aligned_frame({"pctr": predictions["pctr"], "pcvr": predictions["pcvr"]},
                         advertiser.columns(have, rows), "federated evaluation")


def combined_batch(media: PartyData, advertiser: PartyData, media_rows: np.ndarray,
                   advertiser_rows: np.ndarray, with_media: bool) -> Dict[str, np.ndarray]:
    """The inputs of one batch: the advertiser's, and the media's too when ``with_media``."""
    x = advertiser.batch(advertiser_rows)
    if with_media:
        x.update(media.batch(media_rows))
    return x


def train_arm(arm: str, media_dir: str, advertiser_dir: str, model_name: str, seed: int,
              shuffle_seed: int, model_config: ModelConfig, train_config: TrainConfig,
              progress: bool = True, export_dir: Optional[str] = None, width: int = 8,
              bottom_units: Sequence[int] = (64,)) -> Dict:
    """Train and score one single-process arm; returns its test metrics and throughput.
    With ``export_dir`` the trained model is written there as a SavedModel
    (``federated.model.export_top``: the advertiser-only model is the federated ensemble's
    fallback when no media embedding comes); ``width`` and ``bottom_units`` shape the
    ``centralized`` arm's bottom network (those of the federated run it bounds)."""
    from tqdm import tqdm

    from models.metrics import evaluate_predictions
    if arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {arm!r}")
    flat = arm == "centralized_flat"
    split = arm == "centralized"
    data = {s: (PartyData.load(media_dir, s), PartyData.load(advertiser_dir, s))
            for s in ("train", "test")}
    joined = {s: JoinedSplit.join(*data[s]) for s in data}
    media, adv = data["train"]
    features = list(adv.features) + (list(media.features) if flat else [])
    targets = [t for t in ("click", "cart", "purchase") if t in adv.labels]
    order = TrainingOrder(len(joined["train"]), train_config.batch_size, train_config.epochs,
                          shuffle_seed, train_config.max_steps)
    bottom = (BottomTrainer(media.features, width, bottom_units, model_config.embedding_dim,
                            train_config, order.total_steps, seed) if split else None)
    trainer = TopTrainer(model_name, features, targets, width if split else 0, model_config,
                         train_config, order.total_steps, seed)
    train_rows = joined["train"]

    def batch(step_rows):
        return combined_batch(media, adv, train_rows.media_rows[step_rows],
                              train_rows.advertiser_rows[step_rows], flat)

    def media_batch(data, rows):
        return data.batch(rows) if split else None

    all_labels = adv.columns(targets, train_rows.advertiser_rows)
    first = order.rows(0)[:8]
    embedding = None
    if split:
        bottom.build(media.batch(train_rows.media_rows[first]))
        embedding = bottom.forward(media.batch(train_rows.media_rows[first]))
    trainer.build(batch(first), embedding, label_rates(all_labels))
    bar = tqdm(total=order.total_steps, desc=arm, unit="step", disable=not progress,
               file=sys.stderr)
    started, seen, losses = time.perf_counter(), 0, []
    for step in range(order.total_steps):
        rows = order.rows(step)
        labels = adv.columns(targets, train_rows.advertiser_rows[rows])
        xm = media_batch(media, train_rows.media_rows[rows])
        embedding = bottom.forward(xm) if split else None
        loss, grad = trainer.step(batch(rows), labels, embedding)
        if split:
            bottom.backward(xm, grad)
        losses.append(loss)
        seen += len(rows)
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - started
    media_t, adv_t = data["test"]
    test_rows = joined["test"]
    preds: Dict[str, List[np.ndarray]] = {"pctr": [], "pcvr": [], "pctcvr": []}
    chunk = train_config.eval_batch_size
    for i in range(0, len(test_rows), chunk):
        x = combined_batch(media_t, adv_t, test_rows.media_rows[i:i + chunk],
                           test_rows.advertiser_rows[i:i + chunk], flat)
        xm = media_batch(media_t, test_rows.media_rows[i:i + chunk])
        for k, v in trainer.predict(x, bottom.forward(xm) if split else None).items():
            preds[k].append(v)
    predictions = {k: np.concatenate(v) for k, v in preds.items()}
    metrics = evaluate_predictions(evaluation_frame(adv_t, test_rows.advertiser_rows,
                                                    predictions))
    if export_dir and not split:
        from federated.model import export_top
        export_top(trainer.model, features, 0, export_dir)
    return {"arm": arm, "seed": seed, "steps": order.total_steps,
            "train_seconds": seconds, "samples_per_second": seen / seconds if seconds else 0.0,
            "final_loss": float(np.mean(losses[-20:])) if losses else None,
            "test": {k: float(v) for k, v in metrics.items()}}
