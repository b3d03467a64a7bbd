"""Split a processed dataset into the two parties' own files, and read a party's files back.

In production the two parties never hold one table: the media app logs its users' behaviour
(watch time, shopping minutes, ad clicks: the ``media_*`` columns, tagged ``media_private``) and
the advertiser logs its own side of the impression (user profile, item, context, and the labels:
click, cart, purchase). What they share is a join key that both logs carry, here the
impression's request key. :func:`split_parties` makes that world out of one processed dataset:

- ``OUT/media/{train,valid,test}/part.parquet``: ``request_key`` and the ``media_*`` features,
  in an order of the media's own (its own row ids are its file positions);
- ``OUT/advertiser/{split}/part.parquet``: ``request_key``, every other feature, the targets
  and (simulator only, for the entire-space evaluation) the ground-truth columns, in another
  order;
- each party's ``features.json`` (its model inputs with their cardinalities) and
  ``party.json`` (who it is, its columns, row counts).

Each party drops a different small share of the impressions (``1 - overlap``): the request
logs of two companies never match exactly, which is why the parties run a private set
intersection (``federated.psi``) before training. Nothing else crosses: the media's files hold
no label and no advertiser column, the advertiser's no ``media_*`` column (tested).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from preprocessing import columns as C
from common.atomic import atomic_output_dir, atomic_write_text
from preprocessing.splits import read_split_table

MEDIA = "media"
ADVERTISER = "advertiser"
PARTIES = (MEDIA, ADVERTISER)
SPLITS = ("train", "valid", "test")
KEY = "request_key"
FEATURES_FILE = "features.json"
PARTY_FILE = "party.json"


def request_keys(split: str, n: int, salt: str) -> np.ndarray:
    """The join key of each impression of a split: 16 hex digits of SHA-256 over the salt, the
    split and the row, the opaque request id that both parties' logs carry."""
    base = f"{salt}\0{split}\0".encode()
    return np.array([hashlib.sha256(base + str(i).encode()).hexdigest()[:16]
                     for i in range(n)], dtype=object)


def party_columns(schema_features: Sequence[str], media_private: Sequence[str]) -> Dict[str, List[str]]:
    """Feature columns of each party: the media holds ``media_private``, the advertiser the rest."""
    media = [c for c in schema_features if c in set(media_private)]
    return {MEDIA: media, ADVERTISER: [c for c in schema_features if c not in set(media)]}


def split_parties(proc_dir: str, out: str, seed: int = 0, overlap: float = 0.98) -> Dict:
    """Write each party's files from ``proc_dir`` (a ``preprocessing.run`` output); returns the
    summary (rows per party and split, the true intersection size).

    Args:
        proc_dir: the processed dataset (its schema says which features are media-private).
        out: gets ``media/`` and ``advertiser/`` (written atomically, each whole).
        seed: draws each party's row order and the rows it lacks.
        overlap: share of the impressions that each party keeps (independently), in (0, 1].
    """
    if not 0.0 < overlap <= 1.0:
        raise ValueError(f"overlap must be in (0, 1], got {overlap}")
    from models.data import features_and_targets
    features, targets, _ = features_and_targets(proc_dir)
    spec = C.DatasetSpec.load(proc_dir)
    cols = party_columns([f.name for f in features], spec.media_private)
    if not cols[MEDIA]:
        raise ValueError(f"{proc_dir}: no media-private feature (no column named media_*); "
                         f"nothing for a media party to hold")
    by_name = {f.name: f for f in features}
    present = set(read_split_table(os.path.join(proc_dir, "test")).column_names)
    truth = [c for c in spec.ground_truth if c in present]
    rng = np.random.default_rng(seed)
    summary: Dict = {"overlap": overlap, "seed": seed, "rows": {}, "intersection": {}}
    tables = {}
    for split in SPLITS:
        table = read_split_table(os.path.join(proc_dir, split))
        n = table.num_rows
        keys = pa.array(request_keys(split, n, salt=f"{seed}"), pa.string())
        keep = {p: rng.random(n) < overlap for p in PARTIES}
        summary["intersection"][split] = int((keep[MEDIA] & keep[ADVERTISER]).sum())
        for party, names in ((MEDIA, cols[MEDIA]),
                             (ADVERTISER, cols[ADVERTISER] + list(targets) + truth)):
            rows = np.flatnonzero(keep[party])
            rows = rows[rng.permutation(len(rows))]
            part = table.select(names).take(pa.array(rows))
            part = part.add_column(0, KEY, keys.take(pa.array(rows)))
            tables[(party, split)] = part
            summary["rows"].setdefault(party, {})[split] = len(rows)
    for party in PARTIES:
        with atomic_output_dir(os.path.join(out, party)) as staging:
            for split in SPLITS:
                os.makedirs(os.path.join(staging, split))
                pq.write_table(tables[(party, split)],
                               os.path.join(staging, split, "part.parquet"))
            own = [vars(by_name[c]) for c in cols[party]]
            atomic_write_text(os.path.join(staging, FEATURES_FILE), json.dumps(own, indent=2))
            info = {"party": party, "features": cols[party], "key": KEY,
                    "rows": summary["rows"][party]}
            if party == ADVERTISER:
                info.update(targets=list(targets), ground_truth=truth)
            atomic_write_text(os.path.join(staging, PARTY_FILE), json.dumps(info, indent=2))
    return summary


@dataclass
class PartyData:
    """One party's split in memory: its keys, and its feature and label columns as Arrow.

    ``batch(rows)`` gives the model inputs of file rows ``rows`` the way the Merlin loader
    gives them (ids int64, continuous float32, multi-hot as ``name__values`` /
    ``name__offsets``), so the harness's input layer takes them unchanged.
    """

    directory: str
    split: str
    keys: np.ndarray
    table: pa.Table
    features: List
    labels: List[str]

    @classmethod
    def load(cls, party_dir: str, split: str) -> "PartyData":
        """Read ``party_dir/split`` (written by :func:`split_parties`)."""
        from models.inputs import Feature
        info_path = os.path.join(party_dir, PARTY_FILE)
        if not os.path.exists(info_path):
            raise FileNotFoundError(f"{info_path}: not a party directory; write one with "
                                    f"`python -m federated.split`")
        info = json.load(open(info_path))
        features = [Feature(**f) for f in json.load(open(os.path.join(party_dir, FEATURES_FILE)))]
        path = os.path.join(party_dir, split, "part.parquet")
        table = pq.read_table(path)
        missing = [c for c in [KEY] + [f.name for f in features] if c not in table.column_names]
        if missing:
            raise ValueError(f"{path}: missing columns {missing} ({table.num_rows} rows)")
        keys = np.asarray(table.column(KEY).to_pylist(), dtype=object)
        labels = list(info.get("targets", [])) + list(info.get("ground_truth", []))
        return cls(party_dir, split, keys, table, features, labels)

    @property
    def num_rows(self) -> int:
        """Rows in this party's split."""
        return self.table.num_rows

    def batch(self, rows: np.ndarray) -> Dict[str, np.ndarray]:
        """Model inputs of the file rows ``rows`` (in that order)."""
        part = self.table.take(pa.array(np.asarray(rows, dtype=np.int64)))
        out: Dict[str, np.ndarray] = {}
        for f in self.features:
            col = part.column(f.name).combine_chunks()
            if f.kind == "multihot":
                out[f"{f.name}__values"] = col.flatten().to_numpy().astype(np.int64)
                offsets = col.offsets.to_numpy().astype(np.int64)
                out[f"{f.name}__offsets"] = offsets - offsets[0]
            elif f.kind == "categorical":
                out[f.name] = col.to_numpy().astype(np.int64)
            else:
                out[f.name] = col.to_numpy().astype(np.float32)
        return out

    def columns(self, names: Sequence[str], rows: np.ndarray) -> Dict[str, np.ndarray]:
        """Plain columns (labels, ground truth, field ids) of the file rows ``rows``."""
        part = self.table.select(list(names)).take(pa.array(np.asarray(rows, dtype=np.int64)))
        return {c: part.column(c).to_numpy() for c in names}
