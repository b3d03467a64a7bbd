"""Federated serving on the real Triton server (``serving.federated_export``): the media party's
``media_embedding`` model and the advertiser's ``extcvr_federated`` ensemble, whose optional
``media_embedding`` input selects the top network, and whose absence the advertiser-only
fallback.

The networks are built, not trained (no gRPC run): ``MediaBottom`` over the ``media_*`` columns
of ``small_processed``, the ESMM top network over the other columns taking a 4-wide embedding,
and a width-0 ESMM as the fallback, exported with ``federated.model``'s own functions into the
layout of a federated run. Three servers for the whole module, started together: the media
repository (ONNX runtime, DP off), the media repository of the same run with DP on (TF
runtime), and the advertiser repository (TF runtime)."""

import contextlib
import io
import json
import os
import threading

import numpy as np
import pandas as pd
import pytest

WIDTH = 4
ROWS = 200
MAX_BATCH = 256
CLIP, NOISE_MULTIPLIER = 1.0, 0.25  # the DP run: noise std 0.25 x 2 x 1.0 = 0.5
OUTPUTS = ("pctr", "pcvr", "pctcvr")


def _media_json(dp_on: bool) -> dict:
    """A ``media.json`` with the keys ``federated.media`` writes (those export reads)."""
    return {"party": "media",
            "config": {"party": "media", "split": {
                "model": "esmm", "width": WIDTH, "wire_dtype": "float32", "bottom_units": [8],
                "dp": {"epsilon": 4.0 if dp_on else 0.0, "delta": 1e-7, "clip": CLIP}}},
            "dp": {"enabled": dp_on, "epsilon_target": 4.0 if dp_on else 0.0, "delta": 1e-7,
                   "clip": CLIP, "noise_multiplier": NOISE_MULTIPLIER if dp_on else 0.0,
                   "epsilon_spent": None, "releases_per_sample": 1}}


def _rows(proc_dir):
    """The first ``ROWS`` raw test rows and the same rows processed offline."""
    from preprocessing.splits import read_split
    manifest = json.load(open(os.path.join(proc_dir, "manifest.json")))
    raw = pd.concat([pd.read_parquet(os.path.join(manifest["input"], f))
                     for f in manifest["files"]["test"]], ignore_index=True).head(ROWS)
    return raw, read_split(os.path.join(proc_dir, "test")).head(ROWS)


def _feed(processed: pd.DataFrame, signature: dict) -> dict:
    """SavedModel inputs of processed rows (``media_embedding`` excluded)."""
    from serving.preprocess import from_frame, signature_inputs
    cols = [c for c in processed.columns
            if c in signature or f"{c}__values" in signature]
    multihot = [c for c in cols if f"{c}__values" in signature]
    return signature_inputs(from_frame(processed[cols], multihot), signature)


def _call(saved_model: str, feed: dict) -> dict:
    import tensorflow as tf
    serve = tf.saved_model.load(saved_model).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(**{k: tf.constant(v) for k, v in feed.items()}
                                           ).items()}


@pytest.fixture(scope="module")
def federated(tmp_path_factory, small_processed):
    """A fake federated run (DP off), the same run with DP on, the fallback, and the three
    exported repositories (the DP run through the CLI)."""
    import tensorflow as tf

    from federated.model import MediaBottom, build_top_model, export_bottom, export_top
    from models.config import ModelConfig
    from models.data import features_and_targets
    from serving.federated_export import export_media, main, read_media_side
    from serving.settings import ExportSettings
    root = tmp_path_factory.mktemp("federated_serving")
    features, targets, _ = features_and_targets(small_processed)
    media = [f for f in features if f.name.startswith("media_")]
    adv = [f for f in features if not f.name.startswith("media_")]
    _, processed = _rows(small_processed)
    tf.keras.utils.set_random_seed(0)

    def batch(feats):
        sig = {n: {"dtype": "float32" if f.kind == "continuous" else "int64"}
               for f in feats
               for n in ([f"{f.name}__values", f"{f.name}__offsets"] if f.kind == "multihot"
                         else [f.name])}
        return {k: tf.constant(v) for k, v in _feed(processed.head(16), sig).items()}

    config = ModelConfig(embedding_dim=4, tower_units=(8,))
    bottom = MediaBottom(media, width=WIDTH, units=(8,))
    embedding = bottom(batch(media))
    top = build_top_model("esmm", adv, config, targets, width=WIDTH)
    top({**batch(adv), "media_embedding": embedding})
    fallback = build_top_model("esmm", adv, config, targets, width=0, seed=1)
    fallback(batch(adv))

    run = root / "run" / "federated_seed0"
    (run / "media").mkdir(parents=True)
    (run / "advertiser").mkdir()
    signatures = {
        "bottom": export_bottom(bottom, media, str(run / "media" / "saved_model")),
        "top": export_top(top, adv, WIDTH, str(run / "advertiser" / "saved_model"))}
    for party, net in (("media", "bottom"), ("advertiser", "top")):
        (run / party / "signature.json").write_text(json.dumps(signatures[net]))
    (run / "media" / "media.json").write_text(json.dumps(_media_json(False)))
    fallback_dir = str(root / "run" / "advertiser_only_seed0" / "saved_model")
    signatures["fallback"] = export_top(fallback, adv, 0, fallback_dir)
    run_dp = root / "run" / "federated_dp_seed0"
    (run_dp / "media").mkdir(parents=True)
    os.symlink(run / "media" / "saved_model", run_dp / "media" / "saved_model")
    os.symlink(run / "advertiser", run_dp / "advertiser")
    (run_dp / "media" / "media.json").write_text(json.dumps(_media_json(True)))

    workflow = os.path.join(small_processed, "workflow")
    repos = {name: str(root / "repos" / name) for name in ("media", "media_dp", "advertiser")}
    export_media(read_media_side(str(run)), workflow, repos["media"],
                 ExportSettings(max_batch_size=MAX_BATCH, runtime="onnx"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--run", str(run_dp), "--fallback", fallback_dir, "--workflow", workflow,
                     "--out-media", repos["media_dp"], "--out-advertiser", repos["advertiser"],
                     "--runtime", "tf", "--max-batch-size", str(MAX_BATCH)])
    assert code == 0, out.getvalue()
    return {"run": str(run), "fallback": fallback_dir, "workflow": workflow, "repos": repos,
            "cli": out.getvalue(),
            "signatures": {k: s["inputs"] for k, s in signatures.items()}}


@pytest.fixture(scope="module")
def servers(federated):
    """One server per repository, started (and stopped) together."""
    from serving.serve import TritonServer
    started = {name: TritonServer(repo) for name, repo in federated["repos"].items()}
    errors = []

    def start(srv):
        try:
            srv.start(timeout=300)
        except Exception as e:  # noqa: BLE001 - reported below with the others
            errors.append(e)
    threads = [threading.Thread(target=start, args=(s,)) for s in started.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert not errors, errors
        yield started
    finally:
        codes = {}
        stoppers = [threading.Thread(target=lambda n=n, s=s: codes.__setitem__(n, s.stop()))
                    for n, s in started.items()]
        for t in stoppers:
            t.start()
        for t in stoppers:
            t.join()
    assert codes == {n: 0 for n in started}, {n: s.log_tail() for n, s in started.items()}


@pytest.fixture(scope="module")
def clients(servers):
    from serving.client import EnsembleClient
    made = {"media": EnsembleClient(servers["media"].http_url, model="media_embedding"),
            "media_dp": EnsembleClient(servers["media_dp"].http_url, model="media_embedding"),
            "advertiser": EnsembleClient(servers["advertiser"].http_url,
                                         model="extcvr_federated")}
    yield made
    for c in made.values():
        c.close()


@pytest.fixture(scope="module")
def rows(small_processed):
    return _rows(small_processed)


def _embed(clients, raw, which="media"):
    c = clients[which]
    return c.infer_tensors(c.tensors(raw), ["media_embedding"])["media_embedding"]


def _score(clients, raw, embedding=None):
    c = clients["advertiser"]
    tensors = c.tensors(raw)
    assert "media_embedding" not in tensors  # optional: sent only when given
    if embedding is not None:
        tensors["media_embedding"] = embedding
    return c.infer_tensors(tensors, (*OUTPUTS, "used_media_embedding"))


def test_the_media_model_serves_the_bottom_savedmodels_embedding(clients, rows, federated):
    raw, processed = rows
    served = _embed(clients, raw)
    want = _call(os.path.join(federated["run"], "media", "saved_model"),
                 _feed(processed, federated["signatures"]["bottom"]))["media_embedding"]
    assert served.shape == (ROWS, WIDTH) and served.dtype == np.float32
    assert np.abs(served - want).max() <= 1e-5
    assert np.array_equal(_embed(clients, raw), served)  # DP off: no noise


def test_with_the_embedding_the_advertiser_serves_the_top_savedmodel(clients, rows, federated):
    raw, processed = rows
    embedding = _embed(clients, raw)  # the request flow: the media side's embedding
    served = _score(clients, raw, embedding)
    want = _call(os.path.join(federated["run"], "advertiser", "saved_model"),
                 {**_feed(processed, federated["signatures"]["top"]),
                  "media_embedding": embedding})
    assert served["used_media_embedding"].all()
    for k in ("pctr", "pcvr"):
        assert np.abs(served[k] - want[k].reshape(-1)).max() <= 1e-5, k
    # identity calibrator: pCTCVR = pCTR x pCVR
    assert np.abs(served["pctcvr"] - want["pctr"].reshape(-1) * want["pcvr"].reshape(-1)
                  ).max() <= 1e-6


def test_without_the_embedding_the_advertiser_serves_the_fallback(clients, rows, federated):
    raw, processed = rows
    served = _score(clients, raw)
    want = _call(federated["fallback"], _feed(processed, federated["signatures"]["fallback"]))
    assert not served["used_media_embedding"].any()
    for k in ("pctr", "pcvr"):
        assert np.abs(served[k] - want[k].reshape(-1)).max() <= 1e-5, k
    assert np.abs(served["pctr"] - _score(clients, raw, _embed(clients, raw))["pctr"]).max() \
        > 1e-3


def test_concurrent_requests_with_and_without_the_embedding_each_get_their_path(
        clients, rows, servers):
    """Requests of both kinds at once (the dynamic batcher may hand them to one execute)."""
    from concurrent.futures import ThreadPoolExecutor

    from serving.client import EnsembleClient
    raw, _ = rows
    embedding = _embed(clients, raw)
    parts = [(raw.iloc[i * 25:(i + 1) * 25], embedding[i * 25:(i + 1) * 25] if i % 2 else None)
             for i in range(8)]
    alone = [_score(clients, r, e) for r, e in parts]

    def score(part):  # one connection per thread: a tritonclient client is not thread-safe
        own = EnsembleClient(servers["advertiser"].http_url, model="extcvr_federated")
        try:
            return _score({"advertiser": own}, *part)
        finally:
            own.close()
    with ThreadPoolExecutor(len(parts)) as pool:
        together = list(pool.map(score, parts))
    for (_, e), a, b in zip(parts, alone, together):
        assert np.all(b["used_media_embedding"] == (e is not None))
        assert np.allclose(a["pctr"], b["pctr"], atol=1e-6)


@pytest.mark.parametrize("case", ["wrong width", "NaN", "inf", "wrong dtype"])
def test_a_bad_embedding_gets_an_error_naming_it_and_the_server_still_answers(clients, rows,
                                                                                case):
    from tritonclient.utils import InferenceServerException
    raw, _ = rows
    raw = raw.head(8)
    good = _embed(clients, raw)
    bad = {"wrong width": np.zeros((8, WIDTH + 1), np.float32),
           "NaN": np.where(np.arange(8)[:, None] == 3, np.nan, good).astype(np.float32),
           "inf": np.full_like(good, np.inf),
           "wrong dtype": good.astype(np.float64)}[case]
    with pytest.raises(InferenceServerException, match="media_embedding"):
        _score(clients, raw, bad)
    out = _score(clients, raw, good)
    assert out["used_media_embedding"].all() and np.isfinite(out["pcvr"]).all()


def test_with_dp_the_served_embedding_carries_noise_of_the_configured_scale(clients, rows,
                                                                             federated):
    raw, _ = rows
    exact = _embed(clients, raw)
    norms = np.linalg.norm(exact, axis=1, keepdims=True)
    clipped = exact * np.minimum(1.0, CLIP / norms)  # the release is clipped, then noised
    first, second = _embed(clients, raw, "media_dp"), _embed(clients, raw, "media_dp")
    std = NOISE_MULTIPLIER * 2 * CLIP
    info = json.load(open(os.path.join(federated["repos"]["media_dp"], "export.json")))
    assert info["dp"]["enabled"] and info["dp"]["noise_std"] == pytest.approx(std)
    for draw in (first, second):
        noise = (draw - clipped).ravel()
        assert 0.85 * std < noise.std() < 1.15 * std, noise.std()
        assert abs(noise.mean()) < 4 * std / np.sqrt(noise.size)
    assert np.abs(first - second).min() > 0  # fresh noise on every request


def test_the_cli_summary_and_each_repository_holds_only_its_partys_workflow(federated):
    text = federated["cli"]
    assert "serving.federated_export" in text and "extcvr_federated" in text
    assert "std 0.5 (noise_multiplier 0.25 x 2 x clip 1)" in text
    for name, media in (("media", True), ("media_dp", True), ("advertiser", False)):
        repo = federated["repos"][name]
        prep = "media_preprocess" if media else "advertiser_preprocess"
        cats = os.listdir(os.path.join(repo, prep, "1", "workflow", "categories"))
        assert cats and all(("media_" in c) == media for c in cats), (name, cats)
        pickled = open(os.path.join(repo, prep, "1", "workflow", "workflow.pkl"), "rb").read()
        assert (b"user_id" in pickled) != media and (b"media_watch_minutes" in pickled) == media


def test_export_refuses_one_directory_for_both_parties_and_a_foreign_directory(federated,
                                                                               tmp_path,
                                                                               capsys):
    from serving.federated_export import main
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "README.md").write_text("not a repository")
    base = ["--run", federated["run"], "--fallback", federated["fallback"], "--workflow",
            federated["workflow"]]
    same = str(tmp_path / "repo")
    assert main([*base, "--out-media", same, "--out-advertiser", same]) == 2
    assert "must be different directories" in capsys.readouterr().err
    assert main([*base, "--out-media", str(foreign), "--out-advertiser",
                 str(tmp_path / "adv")]) == 2
    assert "not written by serving.federated_export" in capsys.readouterr().err
    assert os.listdir(foreign) == ["README.md"] and not (tmp_path / "adv").exists()
