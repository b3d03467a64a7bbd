"""ESMM on HugeCTR 23.08: the data description, the generated model and container scripts, and
the ONNX adapter that puts the trained model into the ensemble's predict step.

- ``data``: :class:`~models.hugectr.data.HugeCTRData` (file lists, ``_metadata.json`` columns,
  slot sizes from the saved workflow) and the HugeCTR-ready Parquet copy;
- ``config``: :class:`~models.hugectr.config.HugeCTRESMMConfig`;
- ``graph``: the ESMM graph, its JSON configuration and the schema check;
- ``scripts``: ``train_hugectr.py`` and ``export_onnx.py`` for the container;
- the ONNX adapter (``hugectr2onnx`` model wrapped for ``serving.steps.PredictStep``) lives
  in ``serving.hugectr_onnx``; ``onnx_adapter`` is its old command name, an alias;
- ``cli``: ``python -m models.hugectr --data PROC_DIR --out DIR [--config FILE]``.

The HugeCTR run itself (training, ``graph_to_json``, ``hugectr2onnx``, HugeCTR's inference) is
verified only in the NGC merlin-hugectr:23.08 container; not run here. ``README.md`` beside this
file gives the command.
"""

from models.hugectr.config import HugeCTRESMMConfig, load_config
from models.hugectr.data import HugeCTRData, describe, export_data

__all__ = ["HugeCTRESMMConfig", "HugeCTRData", "describe", "export_data", "load_config"]
