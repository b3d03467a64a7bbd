"""Readable names of the processed ``app_id`` codes (``3`` -> ``shortvideo_a``) for reports.

The processed data holds Categorify codes; the workflow's vocabulary
(``workflow/categories/unique.app_id.parquet``, whose index is the code: NVTabular keeps the
first codes for padding, nulls and out-of-vocabulary values) maps a code back to the
raw app index, and the generator's ``generator_config.json`` (beside the raw days that the
manifest names) maps that index to the media app's name. Data without either (a real log, moved
raw files) keeps the bare codes.
"""

from __future__ import annotations

import json
import os
from typing import Dict

import pandas as pd

from preprocessing import columns as C


def app_names(data_dir: str) -> Dict[int, str]:
    """``{processed app code: media app name}`` for the codes that map to a generated app;
    empty when the vocabulary or the generator config cannot be found."""
    vocab_path = os.path.join(data_dir, "workflow", "categories", f"unique.{C.APP_ID}.parquet")
    manifest_path = os.path.join(data_dir, "manifest.json")
    if not (os.path.isfile(vocab_path) and os.path.isfile(manifest_path)):
        return {}
    raw_dir = json.load(open(manifest_path)).get("input", "")
    config_path = os.path.join(raw_dir, "generator_config.json")
    if not os.path.isfile(config_path):
        return {}
    apps = json.load(open(config_path)).get("apps", [])
    vocab = pd.read_parquet(vocab_path)
    names = {}
    for code, raw in zip(vocab.index.tolist(), vocab[C.APP_ID].tolist()):
        if raw is not None and not pd.isna(raw) and 0 <= int(raw) < len(apps):
            names[code] = str(apps[int(raw)]["name"])
    return names


def app_label(code, names: Dict[int, str]) -> str:
    """``"shortvideo_a (3)"``, or ``"3"`` when the code has no name."""
    name = names.get(int(code))
    return f"{name} ({int(code)})" if name else str(int(code))
