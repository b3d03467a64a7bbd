"""Calibrate a trained run's pCVR and evaluate every method before and after.

Usage::

    python -m calibration.calibrate --method {NAME,NAME,...|all} --run RUN_DIR [RUN_DIR ...]
        --data PROC_DIR --field app_id[,category_id] --out CAL_DIR
        [--fit-split valid] [--eval-split test] [--history-split train] [--config FILE]
        [--plot-all-methods]

Each method is fitted on the clicked rows of the calibration split (``valid``: disjoint from the
training split the run learned on and from the test split it is evaluated on), with the run's
exported SavedModel's pCVR as the base prediction and ``purchase`` as the label. Calibrated
pCTCVR is pCTR x calibrated pCVR.

With one run, ``CAL_DIR`` gets:

- ``<method>/calibrator.json``: the exported artifact (numpy-only, no pickle) that the Triton
  calibrate step loads with :func:`calibration.artifact.load_calibrator`;
- ``calibration.json``: per method, ``before`` (the uncalibrated base) and ``after`` metrics on
  the evaluation split, with ``field_rce_app``, ``ece`` and ``auc`` among them (see
  :mod:`calibration.report`), and fit / transform seconds;
- ``calibration.md`` and ``reliability_by_app.png`` (one panel per media app, named when the
  data was generated; one line each for uncalibrated, the best global method and AdaCalib,
  every method with ``--plot-all-methods``).

With several runs (one per seed), each run's output goes to ``CAL_DIR/<run name>/`` and
``CAL_DIR/calibration.json`` / ``calibration.md`` hold mean ± std per method over the runs and
AdaCalib's Field-RCE by app over the best global method's (the best of platt, isotonic,
histogram, sir and gamma) and over NeuCalib's, per seed and by means (one run: the same ratios
for that run).

``--history-split train`` also predicts the earlier days (the base model's training split) for
``adacalib_trend`` (our extension, :mod:`calibration.trend`): AdaCalib fitted on the
calibration split plus each field value's drift over the earlier days, extrapolated to the
serving day. Without it, ``--method all`` leaves that method out.

``--config FILE``: YAML ``{method: {field: value}}`` overriding a method's config dataclass.
Several generated datasets at once: ``python -m calibration.worlds``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from common.atomic import atomic_output_dir
from common.params import check_param
from common.tables import print_table

DEFAULT_FIELDS = ("app_id",)


def parse_methods(text: str, history: bool = True) -> List[str]:
    """``"all"`` or a comma list of method names -> the names (``ValueError`` on unknown).

    ``"all"`` leaves out the methods that need history days (``adacalib_trend``) when
    ``history`` is False (no ``--history-split``); naming such a method without history is an
    error at fit time.
    """
    from calibration import METHODS
    if text.strip() == "all":
        return [m for m in METHODS if history or not uses_history(m)]
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in METHODS]
    if bad or not names:
        raise ValueError(f"--method: unknown method(s) {bad or text!r}; choose from "
                         f"{list(METHODS)} or 'all'")
    return list(dict.fromkeys(names))


def uses_history(method: str) -> bool:
    """Whether ``method`` fits on earlier days besides the calibration day."""
    from calibration import METHODS
    return bool(getattr(METHODS[method], "uses_history", False))


def parse_fields(values: Sequence[str]) -> Tuple[str, ...]:
    """Repeated and/or comma-separated ``--field`` values -> unique field names, in order."""
    out: List[str] = []
    for v in values:
        out += [t.strip() for t in v.split(",") if t.strip()]
    return tuple(dict.fromkeys(out)) or DEFAULT_FIELDS


def load_method_configs(path: Optional[str], methods: Sequence[str]) -> Dict[str, Any]:
    """Config dataclasses from a YAML ``{method: {field: value}}`` (defaults elsewhere)."""
    from calibration import METHODS
    if not path:
        return {}
    import yaml
    with open(path) as fh:
        raw = yaml.safe_load(fh) or {}
    out = {}
    for name, kw in raw.items():
        if name not in METHODS:
            raise ValueError(f"--config: unknown method {name!r}")
        cls = type(METHODS[name].default_config())
        out[name] = cls(**(kw or {}))
    return out


def split_frame(run_dir: str, data, split: str, fields: Sequence[str],
                extra_columns: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """pCTR, pCVR, labels, ground truth and the field columns of every row of ``split``
    (and ``extra_columns``, such as ``day``, when the data has them): the run's
    ``models.predict.predict_frame`` as float64 arrays."""
    from models.predict import predict_frame
    from preprocessing.processed import ProcessedData

    data = ProcessedData.open(data)
    missing = [f for f in fields if f not in data.columns]
    if missing:
        raise ValueError(f"field column(s) {missing} not in {data.root} (columns: "
                         f"{sorted(data.columns)})")
    extra = list(fields) + [c for c in extra_columns if c in data.columns]
    scored = predict_frame(run_dir, data, split, extra_columns=extra)
    frame = {c: scored[c].to_numpy() for c in scored.columns if c not in ("pctr", "pcvr",
                                                                           "pctcvr")}
    frame["pctr"] = scored["pctr"].to_numpy().astype(np.float64)
    frame["pcvr"] = scored["pcvr"].to_numpy().astype(np.float64)
    return frame


@dataclass(frozen=True)
class Variant:
    """A calibrator reported under its own name: a method, its config, and its fit window.

    Args:
        name: the name in the report (``adacalib_shrink10``, ...).
        method: the method (a key of :data:`calibration.METHODS`).
        config: the method's config dataclass (None: defaults).
        extra_days: also fit on this many days before the calibration day (taken from the
            history rows, equally weighted): the "recent days" recency candidate.
    """

    name: str
    method: str
    config: Any = None
    extra_days: int = 0

    def __post_init__(self):
        from calibration import METHODS
        check_param(self.method in METHODS, "method", f"one of {list(METHODS)}", self.method)
        check_param(isinstance(self.extra_days, int) and self.extra_days >= 0, "extra_days",
                    "an int >= 0", self.extra_days)


def _clicked(frame: Mapping[str, np.ndarray], columns: Sequence[str]) -> Dict[str, np.ndarray]:
    keep = np.asarray(frame["click"]) == 1
    return {c: np.asarray(frame[c])[keep] for c in columns}


def fit_rows(variant: Variant, fit: Mapping[str, np.ndarray], fields: Sequence[str],
             history: Optional[Mapping[str, np.ndarray]] = None) -> Dict[str, np.ndarray]:
    """The clicked rows a variant is fitted on: ``pcvr``, ``purchase``, the fields and, when
    history is used, ``day`` (the calibration day's rows last)."""
    from calibration.trend import DAY_COLUMN
    cols = ["pcvr", "purchase", *fields]
    rows = _clicked(fit, cols)
    needs_history = uses_history(variant.method) or variant.extra_days > 0
    if not needs_history:
        return rows
    if history is None:
        raise ValueError(f"{variant.name} fits on days before the calibration day: pass the "
                         "history rows (calibration.calibrate --history-split train)")
    for name, frame in (("calibration", fit), ("history", history)):
        if DAY_COLUMN not in frame:
            raise ValueError(f"{variant.name}: the {name} rows have no '{DAY_COLUMN}' column")
    cal_day = int(np.max(fit[DAY_COLUMN]))
    past = _clicked(history, cols + [DAY_COLUMN])
    if np.any(past[DAY_COLUMN] >= cal_day):
        raise ValueError(f"{variant.name}: history rows must be earlier than the calibration "
                         f"day {cal_day}")
    if variant.extra_days > 0:
        keep = past[DAY_COLUMN] >= cal_day - variant.extra_days
        past = {c: v[keep] for c, v in past.items()}
    rows[DAY_COLUMN] = np.full(len(rows["pcvr"]), cal_day, dtype=np.int64)
    out = {c: np.concatenate([past[c], rows[c]]) for c in rows}
    if not uses_history(variant.method):
        out.pop(DAY_COLUMN)                  # a recent-days variant: one pooled fit
    return out


def fit_variant(variant: Variant, fit: Mapping[str, np.ndarray],
                evaluation: Mapping[str, np.ndarray], fields: Sequence[str],
                history: Optional[Mapping[str, np.ndarray]] = None):
    """Fit one variant and calibrate every row of ``evaluation``.

    Returns ``(calibrator, calibrated pcvr, fit seconds, transform seconds)``.
    """
    from calibration import make_calibrator
    from calibration.trend import DAY_COLUMN
    rows = fit_rows(variant, fit, fields, history)
    cal = make_calibrator(variant.method, fields=fields, config=variant.config)
    extra = {DAY_COLUMN: rows[DAY_COLUMN]} if DAY_COLUMN in rows else {}
    t0 = time.perf_counter()
    cal.fit(rows["pcvr"], rows["purchase"], {**{f: rows[f] for f in fields}, **extra})
    t1 = time.perf_counter()
    q = cal.transform(evaluation["pcvr"], {f: evaluation[f] for f in fields})
    return cal, q, t1 - t0, time.perf_counter() - t1


def calibrate_frames(fit: Mapping[str, np.ndarray], evaluation: Mapping[str, np.ndarray],
                     methods: Sequence[str], fields: Sequence[str], out_dir: str,
                     configs: Optional[Mapping[str, Any]] = None,
                     meta: Optional[Mapping[str, Any]] = None,
                     history: Optional[Mapping[str, np.ndarray]] = None,
                     variants: Sequence[Variant] = (),
                     plot_all_methods: bool = False) -> Dict[str, Any]:
    """Fit every method (and variant) on ``fit`` (clicked rows), evaluate on ``evaluation``,
    write ``out_dir`` (an existing staging directory): artifacts, calibration.json/.md, plot.

    Args:
        history: rows of earlier days (with ``day``) for the methods and variants that use
            them (``adacalib_trend``, ``extra_days``).
        variants: more calibrators, each reported under its own name.
        plot_all_methods: draw every method in ``reliability_by_app.png``, not only
            uncalibrated, the best global method and AdaCalib.

    Returns the ``calibration.json`` content.
    """
    from calibration import BEST_GLOBAL_CANDIDATES
    from calibration.report import (adacalib_ratios, calibration_metrics, markdown_single,
                                    plot_reliability_by_app, reliability_plot_methods)
    configs = configs or {}
    clicked = fit["click"] == 1
    y_fit = fit["purchase"][clicked]
    before = calibration_metrics(evaluation, evaluation["pcvr"], fields)
    result: Dict[str, Any] = {
        **(meta or {}), "fields": list(fields),
        "n_fit_rows": int(clicked.sum()), "n_fit_positives": int(y_fit.sum()),
        "n_eval_rows": int((evaluation["click"] == 1).sum()),
        "n_eval_positives": int(evaluation["purchase"][evaluation["click"] == 1].sum()),
        "ece_binning": "equal_frequency_10",
        "methods": {"uncalibrated": {"before": before, "after": before, **before}},
    }
    eval_clicked = evaluation["click"] == 1
    curves = {"uncalibrated": evaluation["pcvr"][eval_clicked]}
    todo = [Variant(m, m, configs.get(m)) for m in methods] + list(variants)
    for v in todo:
        cal, q, fit_s, transform_s = fit_variant(v, fit, evaluation, fields, history)
        cal.save(os.path.join(out_dir, v.name))
        after = calibration_metrics(evaluation, q, fields)
        result["methods"][v.name] = {**after, "before": before, "after": after,
                                     "fit_seconds": fit_s, "transform_seconds": transform_s,
                                     "artifact": os.path.join(v.name, "calibrator.json"),
                                     "fields": list(cal.fields)}
        curves[v.name] = q[eval_clicked]
    ratios = adacalib_ratios([result], BEST_GLOBAL_CANDIDATES)
    if ratios:
        result["ratios_field_rce_app"] = ratios
    with open(os.path.join(out_dir, "calibration.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    with open(os.path.join(out_dir, "calibration.md"), "w") as fh:
        fh.write(markdown_single(result))
    if "app_id" in evaluation:
        shown = (list(curves) if plot_all_methods
                 else reliability_plot_methods(result, BEST_GLOBAL_CANDIDATES))
        names = {int(k): v for k, v in ((meta or {}).get("app_names") or {}).items()}
        plot_reliability_by_app(evaluation["purchase"][eval_clicked],
                                evaluation["app_id"][eval_clicked],
                                {m: curves[m] for m in shown},
                                os.path.join(out_dir, "reliability_by_app.png"),
                                names=names or None)
    return result


def run_meta(run_dir: str, data, **extra) -> Dict[str, Any]:
    """What a calibration result records about its run and data: the run's model and seed, the
    paths without this machine's (``common.provenance``: ``RUN``, ``PROC``), and the media
    apps' names (the reliability plot's titles)."""
    from common.provenance import portable_path
    from preprocessing.app_names import app_names
    from preprocessing.processed import ProcessedData
    data = ProcessedData.open(data)
    cfg_path = os.path.join(run_dir, "config.json")
    run_cfg = json.load(open(cfg_path)) if os.path.exists(cfg_path) else {}
    parent = os.path.dirname(os.path.abspath(run_dir))
    return {**extra, "run": portable_path(run_dir, "RUN", {parent: "RUNS"}),
            "model": run_cfg.get("model"), "seed": run_cfg.get("seed"),
            "data": portable_path(data.root, "PROC"),
            "app_names": {str(k): v for k, v in app_names(data.root).items()}}


def calibrate_run(run_dir: str, data, methods: Sequence[str], fields: Sequence[str],
                  out_dir: str, fit_split: str = "valid", eval_split: str = "test",
                  configs: Optional[Mapping[str, Any]] = None,
                  history_split: Optional[str] = None,
                  plot_all_methods: bool = False) -> Dict[str, Any]:
    """Predict ``fit_split`` and ``eval_split`` (and ``history_split``, the earlier days that
    ``adacalib_trend`` reads its drift from) with the run, then :func:`calibrate_frames`."""
    from calibration.trend import DAY_COLUMN
    if fit_split == eval_split:
        raise ValueError("the calibration split must differ from the evaluation split; got "
                         f"{fit_split!r} for both")
    if fit_split == "train":
        raise ValueError("the calibration split must be disjoint from the training split")
    if history_split in (fit_split, eval_split):
        raise ValueError(f"the history split must differ from the calibration and evaluation "
                         f"splits; got {history_split!r}")
    from preprocessing.processed import ProcessedData
    data = ProcessedData.open(data)
    fit = split_frame(run_dir, data, fit_split, fields, (DAY_COLUMN,))
    evaluation = split_frame(run_dir, data, eval_split, fields)
    history = (split_frame(run_dir, data, history_split, fields, (DAY_COLUMN,))
               if history_split else None)
    meta = run_meta(run_dir, data, fit_split=fit_split, eval_split=eval_split,
                    history_split=history_split)
    return calibrate_frames(fit, evaluation, methods, fields, out_dir, configs, meta, history,
                            plot_all_methods=plot_all_methods)


def run_names(run_dirs: Sequence[str]) -> List[str]:
    """Distinct sub-directory names for several runs (base names, numbered on a clash)."""
    names: List[str] = []
    for r in run_dirs:
        base = os.path.basename(os.path.normpath(r)) or "run"
        name, i = base, 1
        while name in names:
            i += 1
            name = f"{base}_{i}"
        names.append(name)
    return names


def calibrate(run_dirs: Sequence[str], data_dir: str, methods: Sequence[str],
              fields: Sequence[str], out: str, fit_split: str = "valid",
              eval_split: str = "test", configs: Optional[Mapping[str, Any]] = None,
              history_split: Optional[str] = None,
              plot_all_methods: bool = False) -> Dict[str, Any]:
    """The whole command: one run -> ``out/<method>/``; several -> ``out/<run>/<method>/``
    plus the aggregate over runs. ``out`` appears atomically."""
    from calibration import BEST_GLOBAL_CANDIDATES
    from calibration.report import aggregate_runs, markdown_multi
    from common.provenance import portable_path
    from preprocessing.processed import ProcessedData
    data = ProcessedData.open(data_dir)  # once for every run
    with atomic_output_dir(out) as staging:
        if len(run_dirs) == 1:
            return calibrate_run(run_dirs[0], data, methods, fields, staging, fit_split,
                                 eval_split, configs, history_split, plot_all_methods)
        per_run = []
        for name, run_dir in zip(run_names(run_dirs), run_dirs):
            sub = os.path.join(staging, name)
            os.makedirs(sub)
            per_run.append(calibrate_run(run_dir, data, methods, fields, sub, fit_split,
                                         eval_split, configs, history_split, plot_all_methods))
        agg = aggregate_runs(per_run, BEST_GLOBAL_CANDIDATES)
        agg.update({"runs": [r["run"] for r in per_run], "seeds": [r["seed"] for r in per_run],
                    "subdirs": run_names(run_dirs), "fields": list(fields),
                    "data": portable_path(data.root, "PROC"), "fit_split": fit_split,
                    "eval_split": eval_split, "ece_binning": "equal_frequency_10"})
        with open(os.path.join(staging, "calibration.json"), "w") as fh:
            json.dump(agg, fh, indent=2)
        with open(os.path.join(staging, "calibration.md"), "w") as fh:
            fh.write(markdown_multi(agg, fields))
        return agg


def main(argv: Optional[List[str]] = None) -> int:
    """CLI entry point: ``python -m calibration.calibrate``."""
    parser = argparse.ArgumentParser(prog="python -m calibration.calibrate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="all", help="a name, a comma list, or 'all'")
    parser.add_argument("--run", "--runs", dest="runs", nargs="+", required=True,
                        help="trained run directories (several: one per seed)")
    parser.add_argument("--data", required=True, help="output directory of preprocessing.run")
    parser.add_argument("--field", action="append", default=[],
                        help="field column(s), comma-separated or repeated (default app_id)")
    parser.add_argument("--out", required=True, help="calibration output directory")
    parser.add_argument("--fit-split", default="valid", choices=("valid", "test"))
    parser.add_argument("--eval-split", default="test", choices=("valid", "test"))
    parser.add_argument("--history-split", default=None, choices=("train",),
                        help="earlier days for adacalib_trend (our extension): the base model's "
                             "per-app drift over them; 'all' includes adacalib_trend only "
                             "with it")
    parser.add_argument("--config", default=None, help="YAML {method: {field: value}}")
    parser.add_argument("--plot-all-methods", action="store_true",
                        help="reliability_by_app.png with every method (default: uncalibrated, "
                             "the best global method and AdaCalib)")
    args = parser.parse_args(argv)
    try:
        methods = parse_methods(args.method, history=args.history_split is not None)
        fields = parse_fields(args.field)
        configs = load_method_configs(args.config, methods)
        t0 = time.perf_counter()
        result = calibrate(args.runs, args.data, methods, fields, args.out, args.fit_split,
                           args.eval_split, configs, args.history_split,
                           args.plot_all_methods)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(open(os.path.join(args.out, "calibration.md")).read())
    rows = [("output", os.path.abspath(args.out)), ("methods", ", ".join(methods)),
            ("fields", ", ".join(fields)), ("runs", len(args.runs))]
    if len(args.runs) == 1:
        m = result["methods"]
        rows.append(("field_rce_app before", f"{m['uncalibrated']['field_rce_app']:.4f}"))
        for name in methods:
            rows.append((f"field_rce_app {name}", f"{m[name]['field_rce_app']:.4f}"))
    for key, label in (("best_global", "best global"), ("neucalib", "neucalib")):
        r = result.get("ratios_field_rce_app", {}).get(key)
        if r:
            rows.append((f"adacalib / {label} RCE(app), per seed",
                         ", ".join(f"{v:.3f}" for v in r["values"])))
            rows.append((f"adacalib / {label} RCE(app), by means",
                         f"{r['by_means']:.3f} ({r['by_means_reference']})"))
    rows.append(("seconds", f"{time.perf_counter() - t0:.1f}"))
    print_table("calibration.calibrate", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
