"""Loading processed splits: base label rates."""

import glob
import os

import pandas as pd
import pytest

from models.data import label_rates


def test_label_rates_are_ctr_over_impressions_and_funnel_rates_over_clicks(small_processed):
    parts = sorted(glob.glob(os.path.join(small_processed, "train", "*.parquet")))
    df = pd.concat([pd.read_parquet(p, columns=["click", "cart", "purchase"]) for p in parts])
    rates = label_rates(small_processed, ("click", "cart", "purchase"))
    clicked = df[df["click"] == 1]
    assert rates["click"] == pytest.approx(df["click"].mean(), rel=1e-12)
    assert rates["cart"] == pytest.approx(clicked["cart"].mean(), rel=1e-12)
    assert rates["purchase"] == pytest.approx(clicked["purchase"].mean(), rel=1e-12)


def _loader_threads():
    import threading
    return [t for t in threading.enumerate() if t.is_alive() and "load_chunks" in t.name]


def test_a_batch_stream_left_early_stops_its_loader_thread(small_processed):
    """A consumer that stops early (max_steps, a first batch) must not leave the Merlin
    loader's chunk thread behind: it retries its full queue every microsecond and slows down
    everything else in the process."""
    from models.data import batches, features_and_targets, model_columns, split_dataset
    _, targets, schema = features_and_targets(small_processed)
    ds = split_dataset(small_processed, "train", model_columns(schema, targets))
    before = len(_loader_threads())
    for _ in batches(ds, 256, shuffle=False):
        assert len(_loader_threads()) == before + 1
        break
    assert len(_loader_threads()) == before
    stream = batches(ds, 256, shuffle=True, seed=3)
    next(stream)
    stream.close()
    assert len(_loader_threads()) == before


def test_the_loader_dataset_is_on_the_device_that_preprocessing_device_decides(monkeypatch,
                                                                               small_processed):
    """``split_dataset`` (training, the benchmarks) and ``models.pseudolabel`` read through
    ``parts_dataset``, whose ``cpu=`` is ``preprocessing.device``'s ``loader_cpu``: here, with
    TensorFlow loaded, its GPUs are counted (none), and a GPU answer gives ``cpu=False``."""
    import dataclasses

    import merlin.io

    from models.data import parts_dataset, split_dataset
    from preprocessing import device
    device.reset()
    here = device.detect()
    assert here.tensorflow_gpus == 0 and here.tensorflow == "CPU" and here.loader_cpu
    ds = split_dataset(small_processed, "valid", ["click", "purchase"])
    assert ds.cpu and ds.schema.column_names == ["click", "purchase"]

    gpu = dataclasses.replace(here, gpus=1, cudf=True, dask_cudf=True, tensorflow_gpus=1)
    monkeypatch.setattr(device, "detect", lambda: gpu)
    seen = {}
    original = merlin.io.Dataset

    class Recorder:
        def __init__(self, paths, engine, cpu):
            seen.update(paths=paths, cpu=cpu)
            self.schema = original(paths, engine=engine, cpu=True).schema

    monkeypatch.setattr(merlin.io, "Dataset", Recorder)
    parts = sorted(glob.glob(os.path.join(small_processed, "valid", "*.parquet")))
    parts_dataset(parts, ["click"])
    assert seen == {"paths": parts, "cpu": False}
    device.reset()
