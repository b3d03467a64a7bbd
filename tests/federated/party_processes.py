"""Helpers of the tests that run the two parties as real processes (not a test module).

``PartyRun`` writes both parties' configs for a small split-training run over the party files
of the ``party_dirs`` fixture, starts ``python -m federated.advertiser`` and
``python -m federated.media`` as separate processes, and reads what they wrote.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parents[2]


class PartyRun:
    """One federated run of the tests: configs, processes, reports."""

    def __init__(self, parties_dir: str, certs: str, out: str, max_steps: int = 24,
                 checkpoint_every: int = 4, peer_timeout_s: float = 60.0, **split):
        from federated.config import PartyConfig, SplitConfig
        from federated.local import free_port
        from models.config import ModelConfig, TrainConfig
        self.out = out
        address = f"127.0.0.1:{free_port()}"
        base = PartyConfig(
            party="media", data=os.path.join(parties_dir, "media"),
            out=os.path.join(out, "media"), certs=os.path.join(certs, "media"), address=address,
            split=SplitConfig(**{"width": 4, "bottom_units": (8,), **split}),
            model=ModelConfig(embedding_dim=4, tower_units=(8,)),
            train=TrainConfig(batch_size=256, max_steps=max_steps,
                              checkpoint_every=checkpoint_every, eval_batch_size=4096),
            peer_timeout_s=peer_timeout_s, call_timeout_s=30.0)
        self.media = base
        self.advertiser = replace(base, party="advertiser",
                                  data=os.path.join(parties_dir, "advertiser"),
                                  out=os.path.join(out, "advertiser"),
                                  certs=os.path.join(certs, "advertiser"))
        self.procs = {}

    def start(self, party: str, config=None) -> subprocess.Popen:
        """Start ``party`` (``media`` or ``advertiser``) with its config (or ``config``)."""
        config = config or getattr(self, party)
        os.makedirs(self.out, exist_ok=True)
        path = os.path.join(self.out, f"{party}.yaml")
        config.save(path)
        log = open(os.path.join(self.out, f"{party}.log"), "ab")
        cmd = [sys.executable, "-m", f"federated.{party}", "--config", path]
        if party == "media":
            cmd.append("--no-progress")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        self.procs[party] = proc
        if party == "advertiser":
            port_file = os.path.join(config.out, "port")
            if os.path.exists(port_file):
                os.remove(port_file)
            deadline = time.monotonic() + 120
            while not os.path.exists(port_file):
                assert proc.poll() is None, self.log("advertiser")
                assert time.monotonic() < deadline, "the advertiser did not start listening"
                time.sleep(0.2)
        return proc

    def wait_for_step(self, party: str, step: int, timeout: float = 180.0) -> int:
        """Wait until ``party``'s ``progress.json`` says it checkpointed ``>= step``."""
        path = os.path.join(getattr(self, party).out, "progress.json")
        deadline = time.monotonic() + timeout
        while True:
            if os.path.exists(path):
                try:
                    reached = json.load(open(path))["step"]
                except (ValueError, KeyError):
                    reached = -1
                if reached >= step:
                    return reached
            assert time.monotonic() < deadline, f"{party} never reached step {step}"
            assert self.procs[party].poll() is None, self.log(party)
            time.sleep(0.05)

    def kill(self, party: str) -> None:
        """SIGKILL ``party``'s process (no clean-up of any kind)."""
        self.procs[party].send_signal(signal.SIGKILL)
        self.procs[party].wait()

    def wait(self, party: str, timeout: float = 300.0) -> int:
        """Wait for ``party`` to exit; its exit status."""
        return self.procs[party].wait(timeout=timeout)

    def log(self, party: str) -> str:
        """What ``party`` printed."""
        path = os.path.join(self.out, f"{party}.log")
        return open(path, errors="replace").read() if os.path.exists(path) else ""

    def report(self, party: str) -> dict:
        """``media.json`` / ``advertiser.json``."""
        return json.load(open(os.path.join(getattr(self, party).out, f"{party}.json")))

    def stop_all(self) -> None:
        """Kill whatever is still running."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def expected_chain(party_out: str, party_data: str, config) -> Optional[str]:
    """The hash chain of an uninterrupted run: every batch of the training order applied once,
    in order, computed from the party's PSI cache alone."""
    from federated.alignment import Alignment, cache_path
    from federated.parties import PartyData
    from federated.training import CHAIN_START, TrainingOrder, batch_digest, extend_chain
    data = PartyData.load(party_data, "train")
    align = Alignment.load(cache_path(party_out, "train"), data)
    order = TrainingOrder(len(align), config.train.batch_size, config.train.epochs,
                          config.split.shuffle_seed, config.train.max_steps)
    chain = CHAIN_START
    for step in range(order.total_steps):
        chain = extend_chain(chain, batch_digest(align.blinded[order.rows(step)]))
    return chain
