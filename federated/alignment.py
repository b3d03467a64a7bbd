"""Sample alignment without exchanging ids: the ECDH PSI over the wire, and its cache.

Protocol per split (the media party drives; ``a`` is the media's secret scalar, ``b`` the
advertiser's, ``H`` the RFC 9380 hash of an id to P-256; ``federated.psi``)::

    media -> advertiser   PsiStart: the split and the size n of the media's set
    media -> advertiser   H(x)^a for the media's keys x, sorted by value (PsiReblind, chunks)
    advertiser -> media   H(x)^ab, same order
    advertiser -> media   H(y)^b for its keys y, sorted by value  (PsiFetch)
    media                 H(y)^ba; its intersection: the x with H(x)^ab among them
    media -> advertiser   H(y)^ba, in the order received          (PsiReturn)
    advertiser            its intersection: the y with H(y)^ba among the H(x)^ab (PsiDone)

Points travel sorted by value, never in file order: a file order would tell the other party the
position of each shared id in one's own log (which may be sorted by time or by outcome).

What a malicious media party can ask for is bounded (:class:`AdvertiserPsi`): the advertiser
draws a fresh scalar ``b`` for each split at PsiStart and destroys it at PsiDone, re-blinds at
most the announced ``n`` points (and no more than ``psi_max_peer_rows`` when the advertiser sets
it), in consecutive chunks, and answers PsiStart once per split per session (advertiser
process): a second re-blinding, which would let the media test guessed ids (phone numbers,
user ids) against the advertiser's set again, is refused. A chunk sent again at the same offset
with the same points (a retry) gets the same answer; other points there are refused.

Who learns what: each party learns which of *its own* keys are in the intersection (so both
learn its size), the size of the other's set (the media announces its size, and the advertiser
sends all of its blinded keys), and nothing about the other's keys outside the intersection;
raw keys never cross, only points blinded by a secret scalar that never leaves its process.
Both then sort the intersection by its doubly-blinded value: that is the canonical order from
which both derive the same training batches (``federated.training.TrainingOrder``), and the
doubly-blinded values of a batch give the per-batch digest that both compare. The PSI is secure
against a semi-honest peer; a malicious media could return wrong H(y)^ba and spoil the
advertiser's alignment (the per-batch digests then stop the training), not learn more ids.

The result is cached per party (``OUT/psi/<split>.npz``: its own keys in canonical order and
their doubly-blinded values): a restarted party must reuse the alignment of its checkpoints.
The handshake compares a digest of each split's sorted doubly-blinded values.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np
import pandas as pd

from federated.parties import PartyData
from federated.psi import EcdhPsiKey, canonical_order

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


class PsiRefused(Exception):
    """A PSI request the advertiser does not answer (the transport turns it into
    PERMISSION_DENIED with this message)."""


@dataclass
class _Session:
    """One split's PSI on the advertiser: its scalar, the announced size, what was answered."""

    key: EcdhPsiKey
    announced: int
    answered: int = 0
    chunks: Dict[int, str] = field(default_factory=dict)  # offset -> SHA-256 of its points
    media_double: Dict[int, np.ndarray] = field(default_factory=dict)
    own: Optional[Tuple[np.ndarray, np.ndarray]] = None
    returned: Dict[int, np.ndarray] = field(default_factory=dict)


class AdvertiserPsi:
    """The advertiser's side of the protocol for one session (one advertiser process): at most
    one PSI per split, each with a fresh scalar and no more re-blinded points than announced."""

    def __init__(self, data: Dict[str, PartyData], max_peer_rows: Optional[int] = None):
        self.data, self.max_peer_rows = data, max_peer_rows
        self.sessions: Dict[str, _Session] = {}
        self.finished: Dict[str, int] = {}  # split -> the media's announced size

    def start(self, split: str, size: int) -> None:
        """Open ``split``'s PSI for a media set of ``size`` ids, with a fresh scalar.

        Raises:
            PsiRefused: the split's PSI was already started in this session, the size is not a
                non-negative integer, or above ``max_peer_rows``.
        """
        if split not in self.data:
            raise PsiRefused(f"PsiStart: unknown split {split!r} (expected one of "
                             f"{sorted(self.data)})")
        if split in self.sessions or split in self.finished:
            raise PsiRefused(f"PsiStart {split}: this session already re-blinded the media's "
                             f"{split} set; a second re-blinding is refused (restart the "
                             f"advertiser to open a new session with a new key)")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise PsiRefused(f"PsiStart {split}: size must be an integer >= 0, got {size!r}")
        if self.max_peer_rows is not None and size > self.max_peer_rows:
            raise PsiRefused(f"PsiStart {split}: the media announced {size} ids, above this "
                             f"advertiser's psi_max_peer_rows {self.max_peer_rows}")
        self.sessions[split] = _Session(EcdhPsiKey(), size)

    def _session(self, method: str, split: str) -> _Session:
        if split not in self.sessions:
            state = "already finished" if split in self.finished else "not started (PsiStart)"
            raise PsiRefused(f"{method} {split}: the PSI of this split is {state}")
        return self.sessions[split]

    def reblind(self, split: str, offset: int, points: np.ndarray) -> np.ndarray:
        """H(x)^ab of the media's chunk at ``offset``: the next chunk, or the same points at an
        offset already answered (a retry gets the same answer); kept to find the
        intersection later.

        Raises:
            PsiRefused: not started, a gap or other points at an answered offset, or more
                points in all than announced.
        """
        s = self._session("PsiReblind", split)
        points = np.ascontiguousarray(points, dtype=np.uint8).reshape(-1, 32)
        digest = hashlib.sha256(points.tobytes()).hexdigest()
        if not len(points):
            return points  # nothing asked, nothing answered or recorded
        if offset in s.chunks:
            if s.chunks[offset] != digest:
                raise PsiRefused(f"PsiReblind {split}: other points at offset {offset}, which "
                                 f"was already answered")
            return s.media_double[offset]
        if offset != s.answered:
            raise PsiRefused(f"PsiReblind {split}: chunk at offset {offset}, expected the next "
                             f"one at {s.answered}")
        if s.answered + len(points) > s.announced:
            raise PsiRefused(f"PsiReblind {split}: {s.answered + len(points)} points in all, "
                             f"more than the {s.announced} announced at PsiStart")
        out = s.key.reblind(points, processes=PROCESSES) if len(points) else points
        s.chunks[offset], s.media_double[offset] = digest, out
        s.answered += len(points)
        return out

    def fetch(self, split: str, offset: int, count: int) -> Tuple[np.ndarray, int]:
        """A chunk of H(y)^b, the advertiser's blinded keys sorted by value (not in file order:
        the order would tell the media the advertiser's row of each shared id), and the total."""
        s = self._session("PsiFetch", split)
        if s.own is None:
            s.own = sorted_blinded(s.key, self.data[split])
        own = s.own[0]
        return own[offset:offset + count], len(own)

    def receive(self, split: str, offset: int, points: np.ndarray) -> None:
        """The chunk at ``offset`` of H(y)^ba, returned by the media in the order sent: the next
        chunk (or the same points again at an offset already received), never beyond what was
        fetched.

        Raises:
            PsiRefused: a gap, other points at a received offset, more points than fetched, or
                not ``(n, 32)`` uint8.
        """
        s = self._session("PsiReturn", split)
        if not isinstance(points, np.ndarray) or points.dtype != np.uint8 or points.ndim != 2 \
                or points.shape[1] != 32:
            raise PsiRefused(f"PsiReturn {split}: expected (n, 32) uint8 points")
        fetched = len(s.own[0]) if s.own is not None else 0
        received = sum(len(c) for c in s.returned.values())
        if offset in s.returned:
            if not np.array_equal(s.returned[offset], points):
                raise PsiRefused(f"PsiReturn {split}: other points at offset {offset}, which "
                                 f"was already received")
            return
        if offset != received:
            raise PsiRefused(f"PsiReturn {split}: chunk at offset {offset}, expected the next "
                             f"one at {received}")
        if received + len(points) > fetched:
            raise PsiRefused(f"PsiReturn {split}: {received + len(points)} points in all, more "
                             f"than the {fetched} sent")
        s.returned[offset] = points.copy()

    def finish(self, split: str) -> Alignment:
        """The advertiser's alignment once every chunk has been exchanged; the split's scalar is
        dropped, and its PSI cannot be started again in this session."""
        s = self._session("PsiDone", split)
        if s.answered != s.announced:
            raise PsiRefused(f"PsiDone {split}: {s.answered} of the {s.announced} announced "
                             f"points were re-blinded")
        perm = s.own[1] if s.own is not None else np.zeros(0, np.int64)
        own_double = _joined(s.returned)
        if len(own_double) != self.data[split].num_rows or len(perm) != len(own_double):
            raise PsiRefused(f"PsiDone {split}: got {len(own_double)} returned points for "
                             f"{self.data[split].num_rows} rows")
        # Only a complete PSI closes the split for this session (and drops its scalar).
        del self.sessions[split]
        self.finished[split] = s.announced
        in_file_order = np.empty_like(own_double)
        in_file_order[perm] = own_double
        return Alignment.from_intersection(self.data[split], in_file_order,
                                           _joined(s.media_double))


#: Processes that blind and reblind. 1: a forked pool in a process with a live gRPC channel
#: corrupts the TLS stream (gRPC is not fork-safe), so the PSI runs in the party process.
PROCESSES = 1


def sorted_blinded(key, data: PartyData) -> Tuple[np.ndarray, np.ndarray]:
    """A party's blinded keys sorted by value, and the file row of each (what it sends, and
    how it maps the answers back)."""
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
    key = EcdhPsiKey()
    mine, perm = sorted_blinded(key, data)
    call("PsiStart", {"split": split, "size": len(mine)}, {})
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
