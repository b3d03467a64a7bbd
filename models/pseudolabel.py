"""Pseudo-labels for UKD: the teacher's soft pCVR on every row of a processed dataset.

Usage::

    python -m models.pseudolabel --teacher RUN --data PROC --out PROC_PL

Writes a copy of the processed dataset ``PROC`` with one more column, ``teacher_pcvr`` (float32),
in every split (the student distils it on the unclicked rows of ``train``; Xu et al., WWW 2022).
Each Parquet part is streamed: the teacher's SavedModel scores it batch by batch through the
Merlin loader in file order, then the part is copied record batch by record batch with the new
column appended, so memory holds one part's scores and one record batch, not the split. The
split's ``schema.pbtxt`` gets the column tagged ``pseudo_label`` and ``target``, both of which
``preprocessing.workflow.feature_columns`` excludes: it can never become a model input (the
Merlin loader hands it to the UKD student with the labels). The
workflow, the dataset spec and the HugeCTR file list come along, the manifest records the
teacher, and ``PROC_PL`` appears atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from preprocessing import columns as C
from common.atomic import atomic_output_dir, atomic_write_text
from common.tables import peak_rss_mb, print_table
from preprocessing.splits import point_file_list_at

SPLITS = ("train", "valid", "test")


def _teacher_signature(teacher_run: str):
    import tensorflow as tf
    path = os.path.join(teacher_run, "saved_model")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{teacher_run}: no saved_model (train the teacher with "
                                "`python -m models.train --model ukd_teacher` first)")
    serve = tf.saved_model.load(path).signatures["serving_default"]
    return serve, dict(serve.structured_input_signature[1])


def _part_scores(part: str, serve, specs, columns: List[str], batch_size: int) -> np.ndarray:
    """The teacher's pCVR of every row of one Parquet part, in file order."""
    from models.data import batches, parts_dataset
    from models.export import cast_to_signature
    ds = parts_dataset([part], columns)
    out = [serve(**cast_to_signature(x, specs))["pcvr"].numpy().reshape(-1)
           for x, _ in batches(ds, batch_size, shuffle=False)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def _copy_part_with_scores(src: str, dst: str, scores: np.ndarray) -> int:
    """Copy ``src`` to ``dst`` record batch by record batch, appending ``teacher_pcvr``."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    reader = pq.ParquetFile(src)
    rows = reader.metadata.num_rows
    if rows != len(scores):
        raise RuntimeError(f"{src}: {rows} rows but the teacher scored {len(scores)}")
    schema = reader.schema_arrow.append(pa.field(C.TEACHER_PCVR, pa.float32()))
    done = 0
    with pq.ParquetWriter(dst, schema) as writer:
        for batch in reader.iter_batches(batch_size=65_536):
            n = batch.num_rows
            arrays = batch.columns + [pa.array(scores[done:done + n], type=pa.float32())]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
            done += n
    return rows


def _write_schema(schema, out_dir: str) -> None:
    """``schema`` (a split's Merlin schema) plus ``teacher_pcvr`` tagged ``pseudo_label``, as
    ``out_dir/schema.pbtxt``."""
    from merlin.schema import ColumnSchema, Schema, Tags
    from merlin.schema.io.tensorflow_metadata import TensorflowMetadata

    # TARGET: the Merlin loader hands it to the student with the labels, never the features
    schema = schema + Schema([ColumnSchema(C.TEACHER_PCVR, dtype=np.float32,
                                           tags=[C.PSEUDO_LABEL_TAG, Tags.TARGET])])
    TensorflowMetadata.from_merlin_schema(schema).to_proto_text_file(out_dir)


def pseudolabel(teacher_run: str, data_dir: str, out_dir: str, batch_size: int = 16_384,
                progress: bool = True) -> Dict:
    """Write ``data_dir`` with the teacher's pCVR as column ``teacher_pcvr`` to ``out_dir``
    (see the module docstring); returns a summary."""
    from tqdm import tqdm

    from models.data import model_columns
    from preprocessing.processed import ProcessedData
    if os.path.abspath(out_dir) == os.path.abspath(data_dir):
        raise ValueError(f"--out must differ from --data ({data_dir})")
    data = ProcessedData.open(data_dir)
    serve, specs = _teacher_signature(teacher_run)
    t0 = time.perf_counter()
    rows: Dict[str, int] = {}
    means: Dict[str, float] = {}
    with atomic_output_dir(out_dir) as staging:
        for split in SPLITS:
            src_dir = os.path.join(data_dir, split)
            schema = data.schema(split)
            if C.TEACHER_PCVR in schema.column_names:
                raise ValueError(f"{src_dir}: already has a {C.TEACHER_PCVR} column")
            columns = model_columns(schema, data.targets)
            dst_dir = os.path.join(staging, split)
            os.makedirs(dst_dir)
            parts = data.parts(split)
            total, weighted = 0, 0.0
            for part in tqdm(parts, desc=f"pseudo-labels {split}", unit="part",
                             disable=not progress, file=sys.stderr):
                scores = _part_scores(part, serve, specs, columns, batch_size)
                total += _copy_part_with_scores(
                    part, os.path.join(dst_dir, os.path.basename(part)), scores)
                weighted += float(scores.sum(dtype=np.float64))
            rows[split], means[split] = total, weighted / max(total, 1)
            _write_schema(schema, dst_dir)
            for name in ("_metadata.json", "_file_list.txt"):  # HugeCTR's
                if os.path.exists(os.path.join(src_dir, name)):
                    shutil.copy2(os.path.join(src_dir, name), dst_dir)
            point_file_list_at(dst_dir, os.path.join(out_dir, split))
        shutil.copytree(os.path.join(data_dir, "workflow"), os.path.join(staging, "workflow"))
        shutil.copy2(os.path.join(data_dir, C.SPEC_FILENAME),
                     os.path.join(staging, C.SPEC_FILENAME))
        manifest = json.load(open(os.path.join(data_dir, "manifest.json")))
        teacher_config = os.path.join(teacher_run, "config.json")
        manifest["pseudolabel"] = {"teacher": os.path.abspath(teacher_run),
                                   "teacher_model": (json.load(open(teacher_config))["model"]
                                                     if os.path.exists(teacher_config)
                                                     else None),
                                   "source": os.path.abspath(data_dir),
                                   "column": C.TEACHER_PCVR, "rows": rows,
                                   "mean_teacher_pcvr": means,
                                   "seconds": round(time.perf_counter() - t0, 2),
                                   "peak_rss_mb": round(peak_rss_mb(), 1)}
        atomic_write_text(os.path.join(staging, "manifest.json"),
                          json.dumps(manifest, indent=2) + "\n")
    return {"out": os.path.abspath(out_dir), "rows": rows, "mean_teacher_pcvr": means,
            "seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m models.pseudolabel``."""
    parser = argparse.ArgumentParser(prog="python -m models.pseudolabel",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="run directory of the UKD teacher")
    parser.add_argument("--data", required=True, help="processed dataset (preprocessing.run)")
    parser.add_argument("--out", required=True, help="the pseudo-labelled copy to write")
    parser.add_argument("--batch-size", type=int, default=16_384)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        result = pseudolabel(args.teacher, args.data, args.out, args.batch_size,
                             progress=not args.no_progress)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table("models.pseudolabel", [
        ("output", result["out"]),
        *[(f"{s} rows / mean teacher pCVR", f"{n:,} / {result['mean_teacher_pcvr'][s]:.4f}")
          for s, n in result["rows"].items()],
        ("seconds", f"{result['seconds']:.1f}"),
        ("peak RSS (MB)", f"{result['peak_rss_mb']:.0f}"),
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
