"""An AutoHERI run (search, derive, retrain) exported like any other run and served by the real
Triton server: the served pCTR / pCVR / pCTCVR equal the run's own SavedModel on the test day."""

import json
import os

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def autoheri_repository(tmp_path_factory, autoheri_run, small_processed):
    """The shared AutoHERI run (tests/conftest.py: top 3 edges kept) exported to Triton."""
    from serving.export import export
    from serving.settings import ExportSettings
    run_dir = autoheri_run[0]
    repo = str(tmp_path_factory.mktemp("autoheri_serving") / "repo")
    export(run_dir, os.path.join(small_processed, "workflow"), repo,
           settings=ExportSettings(max_batch_size=256))
    return run_dir, repo


def test_an_exported_autoheri_run_is_served_like_the_offline_model(autoheri_repository,
                                                                  small_processed):
    from models.predict import predict_split
    from serving.client import EnsembleClient
    from serving.serve import TritonServer
    run_dir, repo = autoheri_repository
    assert len(json.load(open(os.path.join(run_dir, "autoheri_architecture.json")))["kept"]) == 3
    manifest = json.load(open(os.path.join(small_processed, "manifest.json")))
    raw = pd.concat([pd.read_parquet(os.path.join(manifest["input"], f))
                     for f in manifest["files"]["test"]], ignore_index=True).head(2000)
    offline = predict_split(os.path.join(run_dir, "saved_model"), small_processed,
                            "test").head(len(raw))
    server = TritonServer(repo)
    server.start(timeout=300)
    try:
        client = EnsembleClient(server.http_url, "http")
        served = client.predict(raw, batch_size=256, progress=False)
        client.close()
    finally:
        assert server.stop() == 0, server.log_tail()
    for k in ("pctr", "pcvr", "pctcvr"):
        diff = np.abs(served[k].to_numpy() - offline[k].to_numpy()).max()
        assert diff <= 1e-5, (k, diff)
