"""Feeding processed splits to models through the merlin-dataloader TensorFlow loader.

Only the model inputs and the targets are loaded: ground-truth columns never enter a batch
(``model_columns`` is the single place that decides, and a test checks it).
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from models.inputs import Feature, features_from_schema
from preprocessing import columns as C
from preprocessing import merlin_patches
from preprocessing.processed import ProcessedData

#: A processed dataset: an open handle, or its directory (opened on the spot).
Data = Union[str, ProcessedData]


def load_schema(data: Data, split: str = "train"):
    """The Merlin schema of a processed split (``schema.pbtxt`` written by the workflow).
    Read on the CPU whatever ``preprocessing.device`` decides: only metadata is read."""
    return ProcessedData.open(data).schema(split)


def model_columns(schema, targets: Sequence[str]) -> List[str]:
    """Columns a model batch may hold: the features and the targets, nothing else."""
    return [f.name for f in features_from_schema(schema)] + list(targets)


def split_dataset(data: Data, split: str, columns: Sequence[str]):
    """A merlin Dataset over one split, restricted to ``columns``."""
    return parts_dataset(ProcessedData.open(data).parts(split), columns)


def parts_dataset(parts: Sequence[str], columns: Sequence[str]):
    """A merlin Dataset over Parquet ``parts`` for the TensorFlow loader, restricted to
    ``columns``: cuDF partitions (batches on the GPU) or pandas ones, as
    ``preprocessing.device`` decides (``loader_cpu``; TensorFlow is imported, so its GPUs
    count)."""
    merlin_patches.apply()
    from merlin.io import Dataset

    from preprocessing.device import detect
    ds = Dataset(list(parts), engine="parquet", cpu=detect().loader_cpu)
    ds.schema = ds.schema.select_by_name(list(columns))
    return ds


def batches(dataset, batch_size: int, shuffle: bool, seed: Optional[int] = None,
            skip: int = 0) -> Iterator[Tuple[Dict[str, tf.Tensor], Dict[str, tf.Tensor]]]:
    """Yield ``(features, labels)`` batches; with ``seed`` the order is reproducible.

    Args:
        dataset: from ``split_dataset``.
        batch_size: rows per batch.
        shuffle: shuffle partitions and rows (the Merlin loader's shuffle).
        seed: seeds numpy's global RNG and the loader's ``seed_fn`` (the loader shuffles with
            them), so the same seed gives the same batches: what ``--resume`` relies on.
        skip: batches to drop from the start (already trained on before a restart).
    """
    from merlin.dataloader.tensorflow import Loader
    if seed is not None:
        np.random.seed(seed % (2**32))
    loader = Loader(dataset, batch_size=batch_size, shuffle=shuffle,
                    seed_fn=(lambda: seed % (2**32)) if seed is not None else None)
    try:
        for i, (x, y) in enumerate(loader):
            if i < skip:
                continue
            yield x, y
    finally:
        # also when the consumer stops early (max_steps, a first-rows read): the loader's
        # chunk thread retries a full queue every microsecond until it is stopped, and a
        # leaked one slows everything else in the process down
        loader.stop()


def label_rates(data: Data, targets: Sequence[str], split: str = "train") -> Dict[str, float]:
    """Base rates of a split: CTR over impressions, cart and purchase rates over clicks.

    Keys are the target names; a rate with no denominator (no clicks) is omitted.
    """
    import pyarrow.parquet as pq
    table = pq.read_table(ProcessedData.open(data).parts(split), columns=list(targets))
    cols = {t: np.asarray(table.column(t).to_numpy(), dtype=np.float64) for t in targets}
    rates: Dict[str, float] = {}
    if C.CLICK in cols and len(cols[C.CLICK]):
        click = cols[C.CLICK]
        rates[C.CLICK] = float(click.mean())
        for t in targets:
            if t != C.CLICK and click.sum() > 0:
                rates[t] = float((cols[t] * click).sum() / click.sum())
    return rates


def features_and_targets(data: Data) -> Tuple[List[Feature], Tuple[str, ...], object]:
    """Model inputs, target columns and schema of a processed dataset."""
    data = ProcessedData.open(data)
    schema = data.schema("train")
    return features_from_schema(schema), data.spec.targets, schema
