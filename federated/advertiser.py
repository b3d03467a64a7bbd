"""The advertiser party: labels, its own columns, the top network and every metric.

Usage::

    python -m federated.advertiser --config FILE

It serves gRPC with mutual TLS on the config's ``address`` (only a client presenting the
``media`` certificate of the run's CA is answered), takes part in the PSI, and then, per
training step, receives the media party's embeddings for the batch, checks the batch digest,
trains its top network, and returns the (perturbed) embedding gradients. Metrics stay here:
the media party receives gradients and acknowledgements, never a loss or an AUC.

Writes into ``out``: ``psi/`` (its alignment), ``checkpoints/<alignment>/``, ``progress.json``,
``saved_model/`` (the top network: advertiser features + ``media_embedding``),
``advertiser.json`` (test metrics, leak audit, bytes, throughput), ``port`` (the bound port).
Exit status 0 after the media party's ``Finish``; 3 when the media party is gone for longer than
``peer_timeout_s``; 4 when the run cannot continue (misaligned batches, a refused handshake).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import threading
import time
from typing import Dict, List, Optional

import numpy as np

from federated import alignment as AL
from federated.config import PartyConfig, agreement, differing
from federated.parties import ADVERTISER, MEDIA, SPLITS, PartyData
from federated.privacy import perturb_gradients, secure_generator
from common.atomic import atomic_write_text

SERVICE = "extcvr.federated.Advertiser"
log = logging.getLogger("extcvr.federated.advertiser")
EXIT_PEER_GONE, EXIT_FAILED = 3, 4


def conversion_label(labels: Dict[str, np.ndarray]) -> np.ndarray:
    """The label the leak audit protects: a conversion (``click * purchase``). The media app
    sees the clicks itself (they happen in its app); the purchases are the advertiser's."""
    return (np.asarray(labels["click"]) * np.asarray(labels["purchase"])).astype(np.int8)


class AdvertiserParty:
    """The advertiser's state and the handlers of its gRPC service."""

    def __init__(self, config: PartyConfig):
        self.config = config
        self.data = {s: PartyData.load(config.data, s) for s in SPLITS}
        self.targets = [t for t in ("click", "cart", "purchase") if t in self.data["train"].labels]
        self.psi = AL.AdvertiserPsi(self.data, config.psi_max_peer_rows)
        self.media_set_sizes: Dict[str, int] = {}
        self.alignments: Dict[str, AL.Alignment] = {}
        for split in SPLITS:
            path = AL.cache_path(config.out, split)
            if os.path.exists(path):
                self.alignments[split] = AL.Alignment.load(path, self.data[split])
        self.trainer = self.ckpts = self.order = None
        self.session: Optional[str] = None
        self.last_response = None
        self.rng = secure_generator()
        self.lock = threading.Lock()
        self.last_contact = time.monotonic()
        self.done = threading.Event()
        self.exit_code = 0
        self.failure: Optional[str] = None
        from federated.training import LeakAudit
        self.audit, self.audit_raw = LeakAudit(), LeakAudit()
        from federated.marvell import MarvellState
        self.marvell_state = MarvellState()
        self.counts = {"steps_served": 0, "replayed_batches": 0, "duplicate_requests": 0,
                       "rollbacks": 0, "sessions": 0}
        self.train_seconds = 0.0
        self.predictions: Dict[str, Dict[str, List[np.ndarray]]] = {}

    # -- PSI ---------------------------------------------------------------------------------
    def psi_status(self, header, arrays):
        """The digests of the cached alignments (empty when there are none)."""
        return {"digests": {s: a.digest for s, a in self.alignments.items()}}, {}

    def psi_start(self, header, arrays):
        """Open one split's PSI for the media's announced set size (once per split and
        session; ``federated.alignment.AdvertiserPsi``)."""
        self.psi.start(header["split"], header["size"])
        log.info("PSI %s: the media announced %s ids", header["split"], header["size"])
        return {}, {}

    def psi_reblind(self, header, arrays):
        """H(x)^ab for a chunk of the media's points."""
        return {}, {"points": self.psi.reblind(header["split"], int(header["offset"]),
                                                  arrays["points"])}

    def psi_fetch(self, header, arrays):
        """A chunk of the advertiser's blinded keys."""
        points, total = self.psi.fetch(header["split"], int(header["offset"]),
                                       int(header["count"]))
        return {"total": total}, {"points": points}

    def psi_return(self, header, arrays):
        """A chunk of the advertiser's doubly-blinded keys, returned by the media."""
        self.psi.receive(header["split"], int(header["offset"]), arrays["points"])
        return {}, {}

    def psi_done(self, header, arrays):
        """Finish one split's PSI: cache the alignment (a new one invalidates the trainer)."""
        split = header["split"]
        result = self.psi.finish(split)
        self.media_set_sizes[split] = self.psi.finished[split]
        os.makedirs(os.path.join(self.config.out, "psi"), exist_ok=True)
        result.save(AL.cache_path(self.config.out, split), self.data[split])
        self.alignments[split] = result
        self.trainer = None
        return {"intersection": len(result)}, {}

    # -- training ------------------------------------------------------------------------------
    def _build(self):
        from federated.baselines import label_rates
        from federated.training import PartyCheckpoints, TopTrainer, TrainingOrder
        cfg, train = self.config, self.data["train"]
        align = self.alignments["train"]
        self.order = TrainingOrder(len(align), cfg.train.batch_size, cfg.train.epochs,
                                   cfg.split.shuffle_seed, cfg.train.max_steps)
        self.trainer = TopTrainer(cfg.split.model, train.features, self.targets,
                                  cfg.split.width, cfg.model, cfg.train,
                                  self.order.total_steps, cfg.seed)
        rows = align.rows[:8]
        rates = label_rates(train.columns(self.targets, align.rows))
        self.trainer.build(train.batch(rows), np.zeros((len(rows), cfg.split.width),
                                                       np.float32), rates)
        self.ckpts = PartyCheckpoints(
            os.path.join(cfg.out, "checkpoints", align.digest[:16]), self.trainer.model)
        if not self.ckpts.steps():
            self.ckpts.save()

    def hello(self, header, arrays):
        """The handshake: same settings, same alignment; agree on the newest common
        checkpoint and restore it; start a new session."""
        from federated.transport import ProtocolError
        import grpc
        theirs = header["agreement"]
        diff = differing(agreement(self.config), theirs)
        if diff:
            raise ProtocolError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"the parties' settings differ in {', '.join(diff)}")
        mine = {s: a.digest for s, a in self.alignments.items()}
        if mine != header["alignment"]:
            raise ProtocolError(grpc.StatusCode.FAILED_PRECONDITION,
                                "the parties hold different PSI results; run the PSI again")
        if self.trainer is None:
            self._build()
        common = sorted(set(self.ckpts.steps()) & set(int(s) for s in header["checkpoints"]))
        if not common:
            raise ProtocolError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"no common checkpoint (advertiser has {self.ckpts.steps()}, "
                                f"media has {header['checkpoints']})")
        step, current = common[-1], int(self.ckpts.step)
        if current != step:
            self.counts["rollbacks"] += 1
            self.counts["replayed_batches"] += max(current - step, 0)
        self.ckpts.restore(step)
        from federated.training import load_audits
        audits = load_audits(self.ckpts.directory, step, ("sent", "raw"))
        self.audit, self.audit_raw = audits["sent"], audits["raw"]
        self.session = secrets.token_hex(8)
        self.counts["sessions"] += 1
        self.last_response = None
        log.info("session %s: resuming at step %d of %d", self.session, step,
                 self.order.total_steps)
        return {"session": self.session, "step": step,
                "total_steps": self.order.total_steps}, {}

    def _check_session(self, header):
        from federated.transport import ProtocolError
        import grpc
        if self.session is None or header.get("session") != self.session:
            raise ProtocolError(grpc.StatusCode.ABORTED,
                                "no such session (the advertiser restarted): say Hello again")

    def _fail(self, message: str):
        from federated.transport import ProtocolError
        import grpc
        self.failure, self.exit_code = message, EXIT_FAILED
        log.error(message)
        self.done.set()
        raise ProtocolError(grpc.StatusCode.FAILED_PRECONDITION, message)

    def step(self, header, arrays):
        """One training step on the media's embeddings of batch ``header['step']``."""
        from federated.training import batch_digest, save_audit_segment
        from federated.transport import ProtocolError
        import grpc
        self._check_session(header)
        step, current = int(header["step"]), int(self.ckpts.step)
        if (step == current - 1 and self.last_response is not None
                and self.last_response[0] == step):
            self.counts["duplicate_requests"] += 1  # the answer was lost: answer again
            return self.last_response[1]
        if step != current:
            raise ProtocolError(grpc.StatusCode.ABORTED,
                                f"step {step} out of order: the advertiser is at step {current}; "
                                f"say Hello again")
        align, train = self.alignments["train"], self.data["train"]
        rows = self.order.rows(step)
        digest = batch_digest(align.blinded[rows])
        if digest != header["digest"]:
            self._fail(f"batch {step} misaligned: the media party's batch holds other samples "
                       f"than the advertiser's (digest {header['digest']} != {digest}); do both "
                       f"parties use the same shuffle_seed and PSI result?")
        started = time.perf_counter()
        x = train.batch(align.rows[rows])
        labels = train.columns(self.targets, align.rows[rows])
        embedding = arrays["embedding"].astype(np.float32)
        _, grad = self.trainer.step(x, labels, embedding)
        conv = conversion_label(labels)
        sent, sum_kl = perturb_gradients(grad, conv, self.config.split.gradient_defence,
                                         self.rng, self.marvell_state)
        self.audit_raw.add(grad, conv)
        self.audit.add(sent, conv, sum_kl)
        self.ckpts.record(digest)
        self.counts["steps_served"] += 1
        if (int(self.ckpts.step) % self.config.train.checkpoint_every == 0
                or int(self.ckpts.step) == self.order.total_steps):
            save_audit_segment(self.ckpts.directory, int(self.ckpts.step),
                               {"sent": self.audit, "raw": self.audit_raw})
            self.ckpts.save()
            atomic_write_text(os.path.join(self.config.out, "progress.json"),
                              json.dumps(self.ckpts.state()))
        scale = float(len(rows))  # per-sample gradients of the summed loss: fp16-safe
        wire = self.config.split.wire_dtype
        response = ({"scale": scale}, {"gradient": (sent * scale).astype(wire)})
        self.last_response = (step, response)
        self.train_seconds += time.perf_counter() - started
        return response

    def embed(self, header, arrays):
        """Predictions for a chunk of an evaluation split from the media's embeddings."""
        from federated.training import batch_digest
        self._check_session(header)
        split, offset = header["split"], int(header["offset"])
        align = self.alignments[split]
        embedding = arrays["embedding"].astype(np.float32)
        sl = slice(offset, offset + len(embedding))
        if batch_digest(align.blinded[sl]) != header["digest"]:
            self._fail(f"{split} rows {offset}..{offset + len(embedding)} misaligned")
        preds = self.trainer.predict(self.data[split].batch(align.rows[sl]), embedding)
        store = self.predictions.setdefault(split, {})
        if offset == 0:
            store.clear()
        for k, v in preds.items():
            store.setdefault(k, []).append(v)
        return {}, {}

    def finish(self, header, arrays):
        """Score the test split, export the top network, write ``advertiser.json``."""
        from federated.baselines import evaluation_frame
        from federated.model import export_top
        from models.metrics import evaluate_predictions
        self._check_session(header)
        align = self.alignments["test"]
        preds = {k: np.concatenate(v) for k, v in self.predictions.get("test", {}).items()}
        if len(preds.get("pcvr", [])) != len(align):
            self._fail(f"test predictions cover {len(preds.get('pcvr', []))} of "
                       f"{len(align)} aligned rows")
        metrics = evaluate_predictions(evaluation_frame(self.data["test"], align.rows, preds))
        signature = export_top(self.trainer.model, self.data["train"].features,
                               self.config.split.width,
                               os.path.join(self.config.out, "saved_model"))
        atomic_write_text(os.path.join(self.config.out, "signature.json"),
                          json.dumps(signature, indent=2))
        samples = self.counts["steps_served"] * self.config.train.batch_size
        report = {
            "party": ADVERTISER, "config": self.config.to_dict(),
            "intersection": {s: len(a) for s, a in self.alignments.items()},
            "media_set_size": self.media_set_sizes,
            **self.ckpts.state(), "total_steps": self.order.total_steps, **self.counts,
            "train_compute_seconds": self.train_seconds,
            "test": {k: float(v) for k, v in metrics.items()},
            "leak_sent": self.audit.aucs(), "leak_raw": self.audit_raw.aucs(),
            "approx_samples_trained": samples,
        }
        atomic_write_text(os.path.join(self.config.out, "advertiser.json"),
                          json.dumps(report, indent=2))
        self.done.set()
        return {"ok": True}, {}

    def handlers(self):
        """The service's methods, each serialised by one lock and stamping the last contact."""
        table = {"PsiStatus": self.psi_status, "PsiStart": self.psi_start,
                 "PsiReblind": self.psi_reblind,
                 "PsiFetch": self.psi_fetch, "PsiReturn": self.psi_return,
                 "PsiDone": self.psi_done, "Hello": self.hello, "Step": self.step,
                 "Embed": self.embed, "Finish": self.finish}

        def guarded(fn):
            def call(header, arrays):
                import grpc
                from federated.transport import ProtocolError
                with self.lock:
                    self.last_contact = time.monotonic()
                    try:
                        return fn(header, arrays)
                    except AL.PsiRefused as e:
                        log.warning("refused: %s", e)
                        raise ProtocolError(grpc.StatusCode.PERMISSION_DENIED, str(e)) from None
                    finally:
                        self.last_contact = time.monotonic()
            return call
        return {name: guarded(fn) for name, fn in table.items()}


def run(config: PartyConfig) -> int:
    """Serve until the media party finishes (0), is gone (3) or the run fails (4)."""
    from federated.certs import PartyCredentials
    from federated.transport import serve
    os.makedirs(config.out, exist_ok=True)
    credentials = PartyCredentials.for_party(config.certs, ADVERTISER)
    credentials.read()  # a missing or mismatched file stops here, before any data is loaded
    party = AdvertiserParty(config)
    server, port = serve(SERVICE, party.handlers(), config.address, credentials,
                         peer_name=MEDIA)
    atomic_write_text(os.path.join(config.out, "port"), str(port))
    log.info("advertiser listening on port %d", port)
    if config.address.rsplit(":", 1)[1] == "0":
        log.warning("address %s: port 0 picks a free port per start, so after a restart the "
                    "media will not find this advertiser at its configured address; configure "
                    "a fixed port (default 5701) for runs that must survive a restart",
                    config.address)
    try:
        while not party.done.wait(0.5):
            idle = time.monotonic() - party.last_contact
            if idle > config.peer_timeout_s and not party.lock.locked():
                party.failure = (f"the media party is gone: no request for {idle:.0f} s "
                                 f"(peer_timeout_s {config.peer_timeout_s:g}); the last "
                                 f"checkpoint is kept, restart both to resume")
                party.exit_code = EXIT_PEER_GONE
                break
    finally:
        server.stop(grace=2.0).wait()
    if party.failure:
        print(f"error: {party.failure}", file=sys.stderr)
    return party.exit_code


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m federated.advertiser --config FILE``."""
    from common.quiet import quiet_tensorflow
    quiet_tensorflow()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s advertiser %(message)s")
    parser = argparse.ArgumentParser(prog="python -m federated.advertiser",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the advertiser's YAML file")
    args = parser.parse_args(argv)
    try:
        config = PartyConfig.load_for(args.config, ADVERTISER)
        code = run(config)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if code == 0:
        from common.tables import print_table
        report = json.load(open(os.path.join(config.out, "advertiser.json")))
        test = report["test"]
        print_table("federated.advertiser", [
            ("out", os.path.abspath(config.out)),
            ("steps", f"{report['step']} of {report['total_steps']}"),
            ("applied batches", report["applied_batches"]),
            ("replayed after a rollback", report["replayed_batches"]),
            ("test entire-space CVR AUC", f"{test['entire_space_cvr_auc']:.4f}"),
            ("test CTCVR AUC", f"{test['ctcvr_auc']:.4f}"),
            ("gradient defence", report["config"]["split"]["gradient_defence"]["method"]),
            ("leak AUC norm / direction / PCA (sent)",
             f"{report['leak_sent']['leak_auc_norm']:.3f} / "
             f"{report['leak_sent']['leak_auc_direction']:.3f} / "
             f"{report['leak_sent']['leak_auc_pca']:.3f}"),
            ("batch-level leak AUC (sent)", f"{report['leak_sent']['leak_auc_batch']:.3f}"),
            ("Marvell bound on one gradient's leak AUC (mean sumKL / worst batch)",
             f"{report['leak_sent'].get('marvell_auc_bound_at_mean_kl', float('nan')):.3f} / "
             f"{report['leak_sent'].get('marvell_auc_bound_max', float('nan')):.3f}")])
    return code


if __name__ == "__main__":
    sys.exit(main())
