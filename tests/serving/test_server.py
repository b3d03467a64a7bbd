"""The ensemble on the real Triton server (the tritonserver binary of nvidia-pytriton):
served outputs equal the offline pipeline, and bad requests get error responses after which the
server still answers. One server for the whole module."""

import json
import os

import numpy as np
import pandas as pd
import pytest

MAX_BATCH = 512  # the max_batch_size of the exported repository (conftest.py)

N_ROWS = 10_000


@pytest.fixture(scope="module")
def server(exported):
    from serving.serve import TritonServer
    srv = TritonServer(exported)
    srv.start(timeout=300)
    yield srv
    assert srv.stop() == 0, srv.log_tail()  # a clean shutdown on SIGTERM


@pytest.fixture(scope="module")
def http(server):
    from serving.client import EnsembleClient
    client = EnsembleClient(server.http_url, "http")
    yield client
    client.close()


def _raw_test_rows(proc_dir):
    manifest = json.load(open(os.path.join(proc_dir, "manifest.json")))
    files = [os.path.join(manifest["input"], f) for f in manifest["files"]["test"]]
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def _offline(run_dir, proc_dir, calibrator, n):
    """The offline pipeline without any serving code: NVTabular's offline transform (the
    processed test split) -> the run's SavedModel -> the fitted calibrator's own transform
    (``calibration``), and pCTCVR = pCTR x calibrated pCVR."""
    from models.predict import predict_split
    from preprocessing.splits import read_split
    preds = predict_split(os.path.join(run_dir, "saved_model"), proc_dir, "test").head(n)
    pctr, pcvr = preds["pctr"].to_numpy(np.float64), preds["pcvr"].to_numpy(np.float64)
    if calibrator is not None:
        fields = read_split(os.path.join(proc_dir, "test"), list(calibrator.fields)).head(n)
        pcvr = calibrator.transform(pcvr, {f: fields[f].to_numpy() for f in calibrator.fields})
    return pd.DataFrame({"pctr": pctr, "pcvr": pcvr, "pctcvr": pctr * pcvr})


def test_served_outputs_equal_the_offline_pipeline(http, tiny_run, small_processed,
                                                   adacalib, server):
    cal_dir, calibrator = adacalib
    assert [s["type"] for s in calibrator.spec_["stages"]] == ["per_value"]
    raw = _raw_test_rows(small_processed)
    n = min(N_ROWS, len(raw))
    assert n >= 9_000 and raw[raw.columns.intersection(["media_watch_minutes"])].isna().any().any()
    served = http.predict(raw.head(n), batch_size=MAX_BATCH, progress=False)
    offline = _offline(tiny_run, small_processed, calibrator, n)
    for k in ("pctr", "pcvr", "pctcvr"):
        diff = np.abs(served[k].to_numpy() - offline[k].to_numpy()).max()
        assert diff <= 1e-5, (k, diff)
    # the calibrator really ran: served pCVR is far from the uncalibrated one
    raw_pcvr = _offline(tiny_run, small_processed, None, n)["pcvr"].to_numpy()
    assert np.abs(served["pcvr"].to_numpy() - raw_pcvr).max() > 1e-3


def test_relocated_repository_serves_its_own_copy_of_the_code(server, exported, export_sources):
    """The repository was exported from copies that no longer exist and moved afterwards: each
    step loaded the project code from inside the repository, and no file in it (but the pickled
    workflow, whose stored paths NVTabular replaces at load) names the export-time directories
    or this checkout."""
    from serving.code_bundle import REPO_ROOT
    assert not os.path.exists(export_sources)
    log = open(server.log_path).read()
    for step in ("preprocess", "predict", "calibrate"):
        want = os.path.join(exported, step, "1", "code", "serving")
        assert f"extcvr {step}: code from {want}" in log, log[-3000:]
    for folder, _, files in os.walk(exported):
        for name in files:
            if name == "workflow.pkl":  # NVTabular re-points its vocabularies at load
                continue
            data = open(os.path.join(folder, name), "rb").read()
            for needle in (export_sources, REPO_ROOT):
                assert needle.encode() not in data, (os.path.join(folder, name), needle)


def test_grpc_matches_http(server, http, small_processed):
    from serving.client import EnsembleClient
    rows = _raw_test_rows(small_processed).head(300)
    grpc = EnsembleClient(server.grpc_url, "grpc")
    a = grpc.predict(rows, batch_size=64, progress=False)
    b = http.predict(rows, batch_size=300, progress=False)
    assert np.allclose(a.to_numpy(), b.to_numpy(), rtol=1e-5, atol=1e-7)
    single = grpc.predict(rows.head(3), batch_size=1, progress=False)
    grpc.close()
    assert np.allclose(single.to_numpy(), b.head(3).to_numpy(), atol=1e-6)


def _good(http, small_processed):
    rows = _raw_test_rows(small_processed).head(4)
    return http.tensors(rows)


def _send(http, tensors, dtypes=None):
    """Send raw tensors, optionally declaring another dtype than the array's."""
    from tritonclient.utils import np_to_triton_dtype
    import tritonclient.http as tc
    inputs = []
    for name, arr in tensors.items():
        dt = (dtypes or {}).get(name, np_to_triton_dtype(arr.dtype))
        t = tc.InferInput(name, list(arr.shape), dt)
        t.set_data_from_numpy(arr) if dt == np_to_triton_dtype(arr.dtype) else \
            t.set_data_from_numpy(arr, binary_data=True)
        inputs.append(t)
    return http.client.infer("extcvr", inputs)


def _bad_cases(good):
    n = len(good["item_price"])
    missing = {k: v for k, v in good.items() if k != "item_price"}
    wrong_dtype = {**good, "user_id": good["user_id"].astype(np.float32)}
    wrong_shape = {**good, "item_price": np.repeat(good["item_price"], 2, axis=1)}
    ragged_rows = {**good, "item_price": good["item_price"][:-1]}
    nan = {**good, "item_price": good["item_price"].copy()}
    nan["item_price"][1, 0] = np.nan
    inf = {**good, "media_watch_minutes": np.full((n, 1), np.inf, np.float32)}
    empty = {k: v[:0] for k, v in good.items()}
    big = {k: np.repeat(v[:1], MAX_BATCH + 1, axis=0) for k, v in good.items()}
    zero_len = {**good, "user_recent_cats__lengths": np.zeros((n, 1), np.int64)}
    return {"missing input": (missing, "item_price"), "wrong dtype": (wrong_dtype, "user_id"),
            "wrong shape": (wrong_shape, "item_price"),
            "rows differ between inputs": (ragged_rows, ""),
            "NaN in a continuous feature": (nan, "item_price"),
            "inf in a nullable feature": (inf, "media_watch_minutes"),
            "empty batch": (empty, ""), "oversized batch": (big, ""),
            "list length 0": (zero_len, "user_recent_cats")}


@pytest.mark.parametrize("case", ["missing input", "wrong dtype", "wrong shape",
                                  "rows differ between inputs", "NaN in a continuous feature",
                                  "inf in a nullable feature", "empty batch", "oversized batch",
                                  "list length 0"])
def test_bad_request_gets_an_error_and_the_server_still_answers(http, small_processed, case):
    from tritonclient.utils import InferenceServerException
    good = _good(http, small_processed)
    tensors, needle = _bad_cases(good)[case]
    with pytest.raises(InferenceServerException, match=needle or None):
        _send(http, tensors)
    out = http.infer_tensors(good)
    assert out["pcvr"].shape == (4,) and np.isfinite(out["pcvr"]).all()


def test_unseen_categories_are_served_through_oov(http, small_processed):
    good = _good(http, small_processed)
    unseen = {**good, "user_id": np.full_like(good["user_id"], 10**12),
              "item_id": np.full_like(good["item_id"], 10**12 + 7),
              "app_id": np.full_like(good["app_id"], 999),
              "user_recent_cats": np.full_like(good["user_recent_cats"], 10**9)}
    out = http.infer_tensors(unseen)
    for k in ("pctr", "pcvr", "pctcvr"):
        assert out[k].shape == (4,) and ((out[k] >= 0) & (out[k] <= 1)).all()
    assert not np.allclose(out["pctr"], http.infer_tensors(good)["pctr"])


def test_nan_is_missing_in_a_nullable_column(http, small_processed):
    good = _good(http, small_processed)
    good["media_watch_minutes"][:] = np.nan  # missing in training too: FillMissing applies
    out = http.infer_tensors(good)
    assert np.isfinite(out["pcvr"]).all()


def test_a_broken_repository_fails_with_the_log_tail(tmp_path):
    from serving.serve import ServerError, TritonServer
    bad = tmp_path / "repo" / "broken"
    (bad / "1").mkdir(parents=True)
    (bad / "config.pbtxt").write_text('name: "broken"\nbackend: "python"\nmax_batch_size: [\n')
    with pytest.raises(ServerError, match="(?s)exited with code.*last .* lines.*failed to load"):
        TritonServer(str(tmp_path / "repo")).start(timeout=60)


REPLAY_ROWS = 2_000


def test_the_replay_bids_the_served_calibrated_pcvr(server, tiny_run, small_processed, adacalib,
                                                    tmp_path):
    """The bids of the offline replay path (SavedModel -> calibrator artifact) equal the bids
    of the served ensemble on the same raw rows (1e-5), and so do the replays."""
    from replay.auction import bids
    from replay.bidders import read_day, run_bidders, served_bidder
    from replay.cli import main
    days = {"test": read_day(small_processed, "test", ["app_id"], REPLAY_ROWS)}
    offline = {b.group: b for b in run_bidders(tiny_run, [adacalib[0]], small_processed, days)}
    served = served_bidder(server.http_url, small_processed, days, progress=False)
    calibrated = bids(*offline["esmm+adacalib"].predictions["test"], target_cpa=1.0)
    np.testing.assert_allclose(bids(*served.predictions["test"], target_cpa=1.0), calibrated,
                               rtol=1e-5, atol=1e-5)
    uncalibrated = bids(*offline["esmm"].predictions["test"], target_cpa=1.0)
    assert np.abs(uncalibrated - calibrated).max() > 1e-4      # the calibrator changed the bids

    assert main(["--data", small_processed, "--runs", tiny_run, "--calibrators", adacalib[0],
                 "--served", server.http_url, "--max-rows", str(REPLAY_ROWS), "--target-cpa",
                 "50", "--bid-multiplier", "1", "--out", str(tmp_path / "replay"),
                 "--no-progress"]) == 0
    report = json.load(open(tmp_path / "replay" / "replay.json"))
    same = ("won", "spend", "conversions", "cpa_ratio_by_app")
    assert ({k: report["bidders"]["served"][k] for k in same}
            == {k: report["bidders"]["esmm+adacalib"][k] for k in same})
