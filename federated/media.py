"""The media party: its users' private ``media_*`` columns and the bottom network.

Usage::

    python -m federated.media --config FILE

It connects to the advertiser (gRPC, mutual TLS: it presents the ``media`` certificate and
accepts only the ``advertiser`` certificate of the run's CA), aligns the samples by PSI (or
reuses the alignment both parties cached), agrees on the newest common checkpoint, and drives
the training: per step it computes the batch's embeddings (clipped and noised when DP is on),
sends them with the batch digest, and applies the returned gradients. Then it sends the test
split's embeddings for the advertiser's evaluation, and exports the bottom network.

Writes into ``out``: ``psi/``, ``checkpoints/<alignment>/``, ``progress.json``,
``saved_model/`` (processed media features -> ``media_embedding``), ``media.json`` (steps,
applied batches and their chain, bytes on the wire, DP epsilon spent; no label, no metric).
When the advertiser disappears mid-run it retries for ``peer_timeout_s``; when the advertiser
comes back (restarted) the two resume from their newest common checkpoint.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from federated import alignment as AL
from federated.advertiser import SERVICE
from federated.config import PartyConfig, agreement
from federated.parties import ADVERTISER, MEDIA, SPLITS, PartyData
from common.atomic import atomic_write_text

log = logging.getLogger("extcvr.federated.media")
EXIT_CERTIFICATE, EXIT_PEER_GONE, EXIT_FAILED = 2, 3, 4


class WireCounter:
    """Bytes of every request and response, by phase (``psi``, ``train``, ``eval``): the
    serialised sizes the client sent and received (``PeerClient.last_sizes``), not a second
    encoding."""

    def __init__(self, client):
        self.client = client
        self.bytes: Dict[str, int] = {}
        self.phase = "psi"

    def __call__(self, method: str, header: dict, arrays: dict):
        out = self.client.call(method, header, arrays)
        sent, received = self.client.last_sizes
        self.bytes[self.phase] = self.bytes.get(self.phase, 0) + sent + received
        return out


class MediaParty:
    """The media party's run (:meth:`run`)."""

    def __init__(self, config: PartyConfig, client):
        self.config = config
        self.call = WireCounter(client)
        self.data = {s: PartyData.load(config.data, s) for s in ("train", "test")}
        self.alignments: Dict[str, AL.Alignment] = {}
        self.counts = {"rollbacks": 0, "replayed_batches": 0, "sessions": 0, "steps_sent": 0}

    def align(self) -> None:
        """Reuse the cached alignment when the advertiser holds the same, else run the PSI."""
        theirs = self.call("PsiStatus", {}, {})[0]["digests"]
        data = {s: self.data.get(s) or PartyData.load(self.config.data, s) for s in SPLITS}
        cached = {}
        for split in SPLITS:
            path = AL.cache_path(self.config.out, split)
            if os.path.exists(path):
                cached[split] = AL.Alignment.load(path, data[split])
        if cached and {s: a.digest for s, a in cached.items()} == theirs and len(cached) == 3:
            self.alignments = cached
            log.info("reusing the cached PSI alignment")
            return
        os.makedirs(os.path.join(self.config.out, "psi"), exist_ok=True)
        for split in SPLITS:
            started = time.perf_counter()
            result = AL.media_align(self.call, data[split], split)
            result.save(AL.cache_path(self.config.out, split), data[split])
            self.alignments[split] = result
            log.info("PSI %s: %d of %d rows shared (%.1f s)", split, len(result),
                     data[split].num_rows, time.perf_counter() - started)

    def hello(self, ckpts) -> int:
        """The handshake; restores the newest common checkpoint and returns its step."""
        header, _ = self.call("Hello", {
            "agreement": agreement(self.config),
            "alignment": {s: a.digest for s, a in self.alignments.items()},
            "checkpoints": ckpts.steps()}, {})
        step = int(header["step"])
        current = int(ckpts.step)
        if current != step:
            self.counts["rollbacks"] += 1
            self.counts["replayed_batches"] += max(current - step, 0)
        ckpts.restore(step)
        self.session = header["session"]
        self.counts["sessions"] += 1
        log.info("session %s: resuming at step %d", self.session, step)
        return step

    def run(self, progress: bool = True) -> Dict:
        """Align, train, send the test embeddings, export; returns the ``media.json`` report."""
        from tqdm import tqdm

        from federated.model import export_bottom
        from federated.privacy import EmbeddingDP
        from federated.training import (BottomTrainer, PartyCheckpoints, TrainingOrder,
                                        batch_digest)
        from federated.transport import RemoteError
        import grpc
        cfg = self.config
        psi_started = time.perf_counter()
        self.align()
        psi_seconds = time.perf_counter() - psi_started
        align, train = self.alignments["train"], self.data["train"]
        order = TrainingOrder(len(align), cfg.train.batch_size, cfg.train.epochs,
                              cfg.split.shuffle_seed, cfg.train.max_steps)
        dp = EmbeddingDP(cfg.split.dp, releases=cfg.train.epochs)
        bottom = BottomTrainer(train.features, cfg.split.width, cfg.split.bottom_units,
                               cfg.model.embedding_dim, cfg.train, order.total_steps, cfg.seed,
                               clip=cfg.split.dp.clip if cfg.split.dp.enabled else None)
        bottom.build(train.batch(align.rows[:8]))
        ckpts = PartyCheckpoints(os.path.join(cfg.out, "checkpoints", align.digest[:16]),
                                 bottom.model)
        if not ckpts.steps():
            ckpts.save()
        self.hello(ckpts)
        self.call.phase = "train"
        wire = cfg.split.wire_dtype
        bar = tqdm(total=order.total_steps, initial=int(ckpts.step), desc="federated (media)",
                   unit="step", disable=not progress, file=sys.stderr)
        started, trained = time.perf_counter(), 0
        while int(ckpts.step) < order.total_steps:
            step = int(ckpts.step)
            rows = order.rows(step)
            x = train.batch(align.rows[rows])
            digest = batch_digest(align.blinded[rows])
            embedding = dp.noise(bottom.forward(x)).astype(wire)
            try:
                header, arrays = self.call("Step", {"session": self.session, "step": step,
                                                    "digest": digest},
                                           {"embedding": embedding})
            except RemoteError as e:
                if e.code == grpc.StatusCode.ABORTED:  # the advertiser restarted
                    log.warning("%s", e)
                    self.hello(ckpts)
                    bar.n = int(ckpts.step)
                    bar.refresh()
                    continue
                raise
            grad = arrays["gradient"].astype(np.float32) / float(header["scale"])
            bottom.backward(x, grad)
            ckpts.record(digest)
            self.counts["steps_sent"] += 1
            trained += len(rows)
            bar.update(1)
            if (int(ckpts.step) % cfg.train.checkpoint_every == 0
                    or int(ckpts.step) == order.total_steps):
                ckpts.save()
                atomic_write_text(os.path.join(cfg.out, "progress.json"),
                                  json.dumps(ckpts.state()))
        bar.close()
        train_seconds = time.perf_counter() - started
        self.call.phase = "eval"
        test_align, test = self.alignments["test"], self.data["test"]
        chunk = cfg.train.eval_batch_size
        for offset in range(0, len(test_align), chunk):
            sl = slice(offset, offset + chunk)
            embedding = dp.noise(bottom.forward(test.batch(test_align.rows[sl]))).astype(wire)
            self.call("Embed", {"session": self.session, "split": "test", "offset": offset,
                                "digest": batch_digest(test_align.blinded[sl])},
                      {"embedding": embedding})
        self.call("Finish", {"session": self.session}, {})
        signature = export_bottom(bottom.model, train.features,
                                  os.path.join(cfg.out, "saved_model"))
        atomic_write_text(os.path.join(cfg.out, "signature.json"),
                          json.dumps(signature, indent=2))
        wire_bytes = dict(self.call.bytes)
        report = {
            "party": MEDIA, "config": cfg.to_dict(),
            "intersection": {s: len(a) for s, a in self.alignments.items()},
            **ckpts.state(), "total_steps": order.total_steps, **self.counts,
            "psi_seconds": psi_seconds, "train_seconds": train_seconds,
            "samples_per_second": trained / train_seconds if train_seconds else 0.0,
            "wire_bytes": wire_bytes,
            "train_bytes_per_sample": (wire_bytes.get("train", 0) / max(trained, 1)),
            "dp": {"enabled": cfg.split.dp.enabled, "epsilon_target": cfg.split.dp.epsilon,
                   "delta": cfg.split.dp.delta, "clip": cfg.split.dp.clip,
                   "noise_multiplier": dp.noise_multiplier,
                   "epsilon_spent": dp.spent() if cfg.split.dp.enabled else None,
                   "releases_per_sample": dp.releases},
        }
        atomic_write_text(os.path.join(cfg.out, "media.json"), json.dumps(report, indent=2))
        return report


def run(config: PartyConfig, progress: bool = True) -> int:
    """Run the media party; 0 on success, 2 when the TLS handshake is refused for a certificate
    of another CA, 3 when the advertiser is gone, 4 on a failure."""
    from federated.certs import PartyCredentials
    from federated.transport import CertificateRefused, PeerClient, PeerGone, RemoteError
    os.makedirs(config.out, exist_ok=True)
    client = PeerClient(config.address, SERVICE, PartyCredentials.for_party(config.certs, MEDIA),
                        server_name=ADVERTISER, call_timeout_s=config.call_timeout_s,
                        retry_for_s=config.peer_timeout_s)
    try:
        MediaParty(config, client).run(progress)
    except CertificateRefused as e:
        log.error("%s", e)
        return EXIT_CERTIFICATE
    except PeerGone as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_PEER_GONE
    except RemoteError as e:
        print(f"error: the advertiser refused: {e}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m federated.media --config FILE``."""
    from common.quiet import quiet_tensorflow
    quiet_tensorflow()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s media %(message)s")
    parser = argparse.ArgumentParser(prog="python -m federated.media",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the media party's YAML file")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = PartyConfig.load_for(args.config, MEDIA)
        code = run(config, progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if code == 0:
        from common.tables import print_table
        report = json.load(open(os.path.join(config.out, "media.json")))
        dp = report["dp"]
        print_table("federated.media", [
            ("out", os.path.abspath(config.out)),
            ("steps", f"{report['step']} of {report['total_steps']}"),
            ("applied batches", report["applied_batches"]),
            ("replayed after a rollback", report["replayed_batches"]),
            ("train samples/s", f"{report['samples_per_second']:,.0f}"),
            ("bytes on the wire per training sample", f"{report['train_bytes_per_sample']:.1f}"),
            ("DP epsilon spent", "off" if not dp["enabled"] else
             f"{dp['epsilon_spent']:.2f} (delta {dp['delta']:g})")])
    return code


if __name__ == "__main__":
    sys.exit(main())
