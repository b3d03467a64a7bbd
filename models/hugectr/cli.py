"""Write a self-contained HugeCTR ESMM directory from a processed directory.

Usage::

    python -m models.hugectr --data PROC_DIR --out DIR [--config FILE]

``DIR`` holds, after it succeeds:

- ``data/train|valid|test/``: the HugeCTR-ready Parquet copy with its ``_file_list.txt``
  (paths relative to ``DIR``) and ``_metadata.json`` (``models/hugectr/data.py``);
- ``hugectr_data.json``: slots (name, size, offset), dense columns, labels, the multi-hot columns
  left out, the predict step's signature, the settings, and the verification command;
- ``esmm_config.json``: the model as HugeCTR JSON (``solver``, ``optimizer``, ``layers``),
  checked against HugeCTR's schema before it is written (``models/hugectr/graph.py``);
- ``train_hugectr.py`` and ``export_onnx.py``: the container scripts
  (``models/hugectr/scripts.py``).

The directory is written atomically; an existing non-empty ``DIR`` is replaced only when an
earlier run of this command wrote it. Nothing here runs HugeCTR: the training and the export
are verified only in the NGC merlin-hugectr:23.08 container; not run here (the command is in
the summary and in ``models/hugectr/README.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Dict, List, Optional, Sequence

from models.hugectr.config import HugeCTRESMMConfig, load_config
from models.hugectr.data import (DESCRIPTION_FILE, EXPORT_FORMAT, LABEL_SOURCES, describe,
                                 export_data)
from models.hugectr.graph import ModelInputs, build_config, validate_config
from models.hugectr.scripts import (CHECK_ROWS, CONFIG_FILE, EXPORT_SCRIPT, TRAIN_SCRIPT,
                                    VERIFIED_NOTE, container_command, export_script,
                                    host_commands, train_script)
from common import atomic
from common.atomic import atomic_output_dir


def check_replaceable(out: str) -> None:
    """Refuse to replace ``out`` unless it is absent, empty, or written by this command.

    Raises:
        FileExistsError: ``out`` holds files that this command did not write.
    """
    atomic.check_replaceable(out, DESCRIPTION_FILE, EXPORT_FORMAT, "models.hugectr")


def generate(proc_dir: str, out: str, config: Optional[HugeCTRESMMConfig] = None,
             schema=None) -> Dict:
    """Describe ``proc_dir``, write the Parquet copy, the JSON config and the two container
    scripts into ``out``; returns the content of ``hugectr_data.json``.

    Args:
        proc_dir: a ``preprocessing.run`` output directory.
        out: the output directory (see :func:`check_replaceable`).
        config: model and training settings (defaults when None).
        schema: the workflow's output schema (default: loaded from ``PROC_DIR/workflow``).

    Raises:
        FileNotFoundError / ValueError / FileExistsError: see ``models.hugectr.data.describe``
            and :func:`check_replaceable`.
    """
    config = config or HugeCTRESMMConfig()
    data = describe(proc_dir, schema)
    out = os.path.abspath(out)
    check_replaceable(out)
    with atomic_output_dir(out) as stage:
        desc = export_data(data, stage)
        inputs = ModelInputs(tuple(data.slot_size_array), len(data.dense))
        sources = {s: v["file_list"] for s, v in desc["splits"].items()}
        eval_batches = max(1, math.ceil(desc["splits"]["valid"]["rows"]
                                        / config.batch_size_eval))
        train_rows = desc["splits"]["train"]["rows"]
        cfg = build_config(inputs, config, sources, eval_batches, train_rows)
        validate_config(cfg)
        with open(os.path.join(stage, CONFIG_FILE), "w") as fh:
            json.dump(cfg, fh, indent=2)
        check_rows = max(1, min(CHECK_ROWS, desc["splits"]["test"]["rows"]))
        scripts = {TRAIN_SCRIPT: train_script(inputs, config, sources, eval_batches, out,
                                              data.proc_dir, train_rows),
                   EXPORT_SCRIPT: export_script(inputs, config, sources["test"], check_rows,
                                                out)}
        for name, text in scripts.items():
            with open(os.path.join(stage, name), "w") as fh:
                fh.write(text)
            os.chmod(os.path.join(stage, name), 0o755)
        desc.update({"config": config.to_dict(), "max_eval_batches": eval_batches,
                     "iterations": config.iterations(train_rows),
                     "check_rows": check_rows,
                     "files": {"config": CONFIG_FILE, "train": TRAIN_SCRIPT,
                               "export": EXPORT_SCRIPT},
                     "status": VERIFIED_NOTE, "verify": container_command(out),
                     "then": host_commands(out)})
        with open(os.path.join(stage, DESCRIPTION_FILE), "w") as fh:
            json.dump(desc, fh, indent=2)
    return desc


def summary_rows(desc: Dict, out: str) -> List:
    """The rows of the closing summary table."""
    cfg = desc["config"]
    sizes = desc["slot_size_array"]
    rows = [("processed data", desc["source"]), ("output", os.path.abspath(out))]
    for split, info in desc["splits"].items():
        rows.append((f"{split} rows (parts)", f"{info['rows']:,} ({len(info['parts'])})"))
    rows += [("slots (one-hot)", f"{len(sizes)}: {sum(sizes):,} keys, largest {max(sizes):,}"),
             ("dense columns", len(desc["dense"])),
             ("labels", ", ".join(f"{k} = {v}" for k, v in LABEL_SOURCES.items())),
             ("multi-hot left out", ", ".join(desc["multihot_left_out"]) or "-"),
             ("embedding / towers", f"{cfg['embedding_vec_size']} / "
                                    f"{'x'.join(str(u) for u in cfg['tower_units'])}"),
             ("batch / lr / ctcvr weight", f"{cfg['batch_size']} / {cfg['learning_rate']} / "
                                           f"{cfg['ctcvr_weight']}"),
             ("training", (f"{cfg['epochs']} epoch(s), " if cfg["epochs"] else "")
              + f"{desc['iterations']:,} iterations"),
             ("files", ", ".join([DESCRIPTION_FILE, *desc["files"].values(), "data/"])),
             ("status", desc["status"]),
             ("verify (container)", desc["verify"])]
    rows += [("then (host)", cmd) for cmd in desc["then"]]
    return rows


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point: ``python -m models.hugectr``."""
    from common.quiet import silence_known_warnings
    from common.tables import print_table
    parser = argparse.ArgumentParser(prog="python -m models.hugectr",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="processed directory (preprocessing.run)")
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--config", default=None, help="YAML file of HugeCTRESMMConfig fields")
    args = parser.parse_args(argv)
    silence_known_warnings()
    try:
        desc = generate(args.data, args.out, load_config(args.config))
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table("models.hugectr", summary_rows(desc, args.out))
    return 0
