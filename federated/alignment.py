"""Sample alignment without exchanging ids: the ECDH PSI over the wire, and its cache.

Protocol per split (the media party drives; ``a`` is the media's secret key, ``b`` the
advertiser's, ``H`` hashes an id to a Curve25519 point; ``federated.psi``)::

    media -> advertiser   H(x)^a for the media's keys x, sorted by value (PsiReblind, chunks)
    advertiser -> media   H(x)^ab, same order
    advertiser -> media   H(y)^b for its keys y, sorted by value  (PsiFetch)
    media                 H(y)^ba; its intersection: the x with H(x)^ab among them
    media -> advertiser   H(y)^ba, in the order received          (PsiReturn)
    advertiser            its intersection: the y with H(y)^ba among the H(x)^ab

Points travel sorted by value, never in file order: a file order would tell the other party the
position of each shared id in one's own log (which may be sorted by time or by outcome).
Chunks carry their offset, so a retried chunk replaces itself. Who learns what: each party learns which of *its own* keys are in the intersection (so both
learn its size) and nothing about the other's keys outside it; raw keys never cross, only
points blinded by a secret scalar that never leaves its process. Both then sort the
intersection by its doubly-blinded value: that is the canonical order from which both derive the
same training batches (``federated.training.TrainingOrder``), and the doubly-blinded values of
a batch give the per-batch digest that both compare.

The result is cached per party (``OUT/psi/<split>.npz``: its own keys in canonical order and
their doubly-blinded values): a restarted party must reuse the alignment of its checkpoints.
The handshake compares a digest of each split's sorted doubly-blinded values.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
import pandas as pd

from federated.parties import PartyData

CHUNK = 200_000


def as_points(arr: np.ndarray) -> np.ndarray:
    """``(n, 32)`` uint8 points as an ``S32`` array (sortable, comparable with ``np.isin``)."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8).reshape(-1, 32)
    return arr.view("S32").reshape(-1)


def as_bytes(points: np.ndarray) -> np.ndarray:
    """``S32`` points back to ``(n, 32)`` uint8 (what the wire carries)."""
    return np.frombuffer(np.ascontiguousarray(points, dtype="S32").tobytes(),
                         dtype=np.uint8).reshape(-1, 32)


@dataclass
class Alignment:
    """One party's aligned samples of one split: its file rows and their doubly-blinded
    values, both in the canonical order."""

    rows: np.ndarray
    blinded: np.ndarray  # S32, sorted

    @property
    def digest(self) -> str:
        """SHA-256 (hex, 32 digits) of the sorted doubly-blinded values: equal on both
        parties when they hold the same intersection."""
        return hashlib.sha256(self.blinded.tobytes()).hexdigest()[:32]

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def from_intersection(cls, data: PartyData, own_double: np.ndarray,
                          peer_double: np.ndarray) -> "Alignment":
        """The alignment given the doubly-blinded values of this party's keys (file order) and
        of the peer's."""
        own, peer = as_points(own_double), as_points(peer_double)
        inside = np.flatnonzero(np.isin(own, peer))
        order = np.argsort(own[inside], kind="stable")
        rows = inside[order]
        return cls(rows, own[rows])

    def save(self, path: str, data: PartyData) -> None:
        """Cache: this party's keys (canonical order) and their doubly-blinded values."""
        tmp = path + ".partial.npz"
        np.savez(tmp, keys=np.asarray(data.keys[self.rows], dtype=str),
                 blinded=as_bytes(self.blinded))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str, data: PartyData) -> "Alignment":
        """Read a cache back, resolving its keys to the current file's rows (a key that the
        file no longer holds is an error naming the file and the count)."""
        with np.load(path, allow_pickle=False) as z:
            keys, blinded = z["keys"], as_points(z["blinded"])
        rows = pd.Index(data.keys).get_indexer(keys)
        if (rows < 0).any():
            raise ValueError(f"{path}: {int((rows < 0).sum())} aligned keys are no longer in "
                             f"{data.directory}/{data.split} ({data.num_rows} rows): the data "
                             f"changed since the PSI; delete the cache to align again")
        return cls(rows.astype(np.int64), blinded)


def cache_path(out: str, split: str) -> str:
    """Where a party caches the alignment of ``split``."""
    return os.path.join(out, "psi", f"{split}.npz")


class AdvertiserPsi:
    """The advertiser's side of the protocol: the handlers' state for one session."""

    def __init__(self, data: Dict[str, PartyData]):
        from federated.psi import EcdhPsiKey
        self.data, self.key = data, EcdhPsiKey()
        self.media_double: Dict[str, Dict[int, np.ndarray]] = {}
        self.own_blinded: Dict[str, Tuple[np.ndarray, np.ndarray]] = {}
        self.returned: Dict[str, Dict[int, np.ndarray]] = {}

    def reblind(self, split: str, offset: int, points: np.ndarray) -> np.ndarray:
        """H(x)^ab of the media's chunk at ``offset``; kept (by offset: a retried chunk
        replaces itself) to find the intersection later."""
        out = self.key.reblind(points, processes=PROCESSES) if len(points) else points
        self.media_double.setdefault(split, {})[offset] = out
        return out

    def fetch(self, split: str, offset: int, count: int) -> Tuple[np.ndarray, int]:
        """A chunk of H(y)^b, the advertiser's blinded keys sorted by value (not in file order:
        the order would tell the media the advertiser's row of each shared id), and the total."""
        if split not in self.own_blinded:
            self.own_blinded[split] = sorted_blinded(self.key, self.data[split])
        own = self.own_blinded[split][0]
        return own[offset:offset + count], len(own)

    def receive(self, split: str, offset: int, points: np.ndarray) -> None:
        """The chunk at ``offset`` of H(y)^ba, returned by the media in the order sent."""
        self.returned.setdefault(split, {})[offset] = np.asarray(points, dtype=np.uint8)

    def finish(self, split: str) -> Alignment:
        """The advertiser's alignment once every chunk has been exchanged."""
        _, perm = self.own_blinded.pop(split, (None, np.zeros(0, np.int64)))
        own_double = _joined(self.returned.pop(split, {}))
        media_double = _joined(self.media_double.pop(split, {}))
        if len(own_double) != self.data[split].num_rows or len(perm) != len(own_double):
            raise ValueError(f"PSI {split}: got {len(own_double)} returned points for "
                             f"{self.data[split].num_rows} rows")
        in_file_order = np.empty_like(own_double)
        in_file_order[perm] = own_double
        return Alignment.from_intersection(self.data[split], in_file_order, media_double)


#: Processes that blind and reblind. 1: a forked pool in a process with a live gRPC channel
#: corrupts the TLS stream (gRPC is not fork-safe), so the PSI runs in the party process.
PROCESSES = 1


def sorted_blinded(key, data: PartyData) -> Tuple[np.ndarray, np.ndarray]:
    """A party's blinded keys sorted by value, and the file row of each (what it sends, and
    how it maps the answers back)."""
    from federated.psi import canonical_order
    blinded = key.blind(list(data.keys), processes=PROCESSES)
    perm = canonical_order(blinded)
    return blinded[perm], perm


def _joined(chunks: Dict[int, np.ndarray]) -> np.ndarray:
    if not chunks:
        return np.zeros((0, 32), np.uint8)
    return np.concatenate([chunks[k] for k in sorted(chunks)])


def media_align(call, data: PartyData, split: str) -> Alignment:
    """Run the protocol for one split as the media party; ``call(method, header, arrays)`` is
    the transport (``federated.transport.PeerClient.call``)."""
    from federated.psi import EcdhPsiKey
    key = EcdhPsiKey()
    mine, perm = sorted_blinded(key, data)
    doubled_mine = {}
    for i in range(0, len(mine), CHUNK):
        _, arrays = call("PsiReblind", {"split": split, "offset": i},
                         {"points": mine[i:i + CHUNK]})
        doubled_mine[i] = arrays["points"]
    own_double = np.empty((len(mine), 32), np.uint8)
    own_double[perm] = _joined(doubled_mine).reshape(-1, 32)
    peer_double, offset, total = {}, 0, None
    while total is None or offset < total:
        header, arrays = call("PsiFetch", {"split": split, "offset": offset, "count": CHUNK}, {})
        total = int(header["total"])
        chunk = arrays["points"]
        if not len(chunk):
            break
        doubled = key.reblind(chunk, processes=PROCESSES)
        call("PsiReturn", {"split": split, "offset": offset}, {"points": doubled})
        peer_double[offset] = doubled
        offset += len(chunk)
    call("PsiDone", {"split": split}, {})
    return Alignment.from_intersection(data, own_double, _joined(peer_double))
