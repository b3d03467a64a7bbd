"""Evaluation metrics for CTR / CVR models: pure numpy, no TensorFlow.

Every metric here is defined as in the project's algorithms reference (section "Metrics"):

- ranking: :func:`auc` (exact, ties as in scikit-learn), :func:`gauc` (per-group AUC weighted
  by impressions);
- probabilistic: :func:`logloss`;
- calibration: :func:`pcoc`, :func:`ece` (equal-frequency or equal-width bins),
  :func:`field_rce`, :func:`field_ece`, and :func:`reliability_curve` for plots;
- the whole evaluation protocol on one prediction table: :func:`evaluate_predictions`;
- seed aggregation: :func:`mean_std`, :func:`format_mean_std`, :func:`intervals_overlap`
  (a gain is called real only when the mean ± std intervals of two methods do not overlap).

Conventions shared by all functions
-----------------------------------
- ``y`` holds binary labels (0/1, bool or float 0.0/1.0); any other value raises ``ValueError``.
- ``p`` holds predictions; NaN raises ``ValueError``. Only :func:`ece` with equal-width bins
  and :func:`reliability_curve` with equal-width bins require ``p`` in [0, 1].
- Inputs are 1-D and of equal length, else ``ValueError``.
- A metric that is undefined on its input (no rows, a single class for AUC, no positives for
  PCOC) returns ``nan`` (or ``inf``, where documented) rather than raising, so that one empty
  slice does not abort a whole evaluation.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Mapping, Tuple

import numpy as np

__all__ = [
    "auc",
    "gauc",
    "logloss",
    "pcoc",
    "ece",
    "ece_equal_frequency",
    "ece_equal_width",
    "field_rce",
    "field_ece",
    "reliability_curve",
    "evaluate_predictions",
    "mean_std",
    "format_mean_std",
    "intervals_overlap",
    "BINNINGS",
]

#: The two binnings :func:`ece` and :func:`reliability_curve` accept.
BINNINGS = ("equal_frequency", "equal_width")

# Column names of the prediction table that ``evaluate_predictions`` reads. The label and
# ground-truth names are the canonical ones of ``preprocessing.columns`` (repeated here so that
# this module imports nothing beyond numpy; a test checks that they agree).
CLICK = "click"
PURCHASE = "purchase"
PURCHASE_COUNTERFACTUAL = "purchase_counterfactual"
P_CLICK = "p_click"
P_PURCHASE_GIVEN_CLICK = "p_purchase_given_click"
USER_ID = "user_id"
APP_ID = "app_id"
CATEGORY_ID = "category_id"
PCTR = "pctr"
PCVR = "pcvr"


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------

def _as_1d(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}")
    return arr


def _labels(y: Any, name: str = "y") -> np.ndarray:
    """``y`` as a float64 0/1 vector; ``ValueError`` on any other value."""
    arr = _as_1d(y, name)
    if arr.dtype == bool:
        return arr.astype(np.float64)
    try:
        out = arr.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must hold binary 0/1 labels; got dtype {arr.dtype}") from e
    bad = (out != 0.0) & (out != 1.0)
    if bad.any():
        raise ValueError(f"{name} must hold binary 0/1 labels; found "
                         f"{np.unique(out[bad])[:5].tolist()}")
    return out


def _scores(p: Any, name: str = "p") -> np.ndarray:
    """``p`` as a float64 vector; ``ValueError`` on NaN."""
    arr = _as_1d(p, name)
    try:
        out = arr.astype(np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be numeric; got dtype {arr.dtype}") from e
    if np.isnan(out).any():
        raise ValueError(f"{name} holds NaN")
    return out


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"inputs must have equal lengths; got {lengths}")


def _yp(y: Any, p: Any) -> Tuple[np.ndarray, np.ndarray]:
    y_arr, p_arr = _labels(y), _scores(p)
    _same_length(y=y_arr, p=p_arr)
    return y_arr, p_arr


def _group_codes(groups: Any, n: int, name: str = "groups") -> Tuple[np.ndarray, int]:
    """Dense integer codes 0..G-1 of a 1-D group vector, and G."""
    arr = _as_1d(groups, name)
    if len(arr) != n:
        raise ValueError(f"{name} must have the length of y ({n}); got {len(arr)}")
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    if arr.dtype.kind in "iub":
        # integer ids over a moderate range: dense codes by counting, O(n + range)
        lo, hi = int(arr.min()), int(arr.max())
        if hi - lo <= 4 * n + 1024:
            shifted = arr.astype(np.int64) - lo
            present = np.bincount(shifted, minlength=hi - lo + 1) > 0
            remap = np.cumsum(present) - 1
            return remap[shifted].astype(np.int64), int(present.sum())
    _, codes = np.unique(arr, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    return codes, int(codes.max()) + 1


# --------------------------------------------------------------------------------------------
# ranking
# --------------------------------------------------------------------------------------------

def _twice_midranks(sorted_keys: Tuple[np.ndarray, ...], n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Tie blocks of rows already sorted by ``sorted_keys``.

    Returns ``(block_id, twice_block_midrank_global)``: the block index of each sorted row and,
    per block, ``start + end + 2`` with 0-based inclusive ``start``/``end`` positions, i.e. twice
    the block's 1-based average rank, an exact int64.
    """
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for key in sorted_keys:
        change[1:] |= key[1:] != key[:-1]
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], n) - 1
    block_id = np.cumsum(change) - 1
    return block_id, (starts + ends + 2).astype(np.int64)


def auc(y: Any, p: Any) -> float:
    """Exact area under the ROC curve, ties counted one half (as scikit-learn).

    Computed from the Mann-Whitney U statistic with midranks (the average rank of each block
    of tied scores): ``AUC = (R1 - n1 (n1 + 1) / 2) / (n1 n0)`` where ``R1`` is the sum of the
    positives' midranks, ``n1`` the number of positives and ``n0`` of negatives. This equals
    the probability that a random positive scores above a random negative, plus one half the
    probability of a tie, which is exactly what ``sklearn.metrics.roc_auc_score`` returns
    (trapezoidal ROC area). Rank sums are kept in exact int64 arithmetic; one sort makes it
    O(n log n).

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary labels (0/1).
    p : array-like of shape (n,)
        Scores; only their order matters. NaN raises ``ValueError``; +-inf are allowed.

    Returns
    -------
    float
        The AUC in [0, 1]; ``nan`` when ``y`` holds a single class (or no rows), where the
        AUC is undefined (scikit-learn raises instead). Constant scores give 0.5.

    References
    ----------
    Mann, H. B. and Whitney, D. R. (1947). On a test of whether one of two random variables
    is stochastically larger than the other. Ann. Math. Statist. 18(1), 50-60.
    Hanley, J. A. and McNeil, B. J. (1982). The meaning and use of the area under a receiver
    operating characteristic (ROC) curve. Radiology 143(1), 29-36.
    """
    y_arr, p_arr = _yp(y, p)
    n = len(y_arr)
    n1 = int(y_arr.sum())
    n0 = n - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    order = np.argsort(p_arr, kind="stable")
    p_s = p_arr[order]
    y_s = y_arr[order].astype(bool)
    block_id, twice_mid = _twice_midranks((p_s,), n)
    twice_r1 = int(twice_mid[block_id[y_s]].sum())
    twice_u = twice_r1 - n1 * (n1 + 1)
    return twice_u / (2.0 * n1 * n0)


def _grouped_auc(y: np.ndarray, p: np.ndarray, codes: np.ndarray,
                 n_groups: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group AUC (nan for single-class groups), group sizes and positive counts."""
    n = len(y)
    # one sort on a combined int64 key (group code, dense rank of the score) is much faster
    # than np.lexsort((p, codes)); rows with equal keys are interchangeable
    by_p = np.argsort(p)
    p_sorted = p[by_p]
    dense = np.empty(n, dtype=np.int64)
    dense[by_p] = np.concatenate(([0], np.cumsum(p_sorted[1:] != p_sorted[:-1])))
    key = codes * np.int64(n) + dense
    order = np.argsort(key)                         # by group, then by score
    key_s = key[order]
    g_s = codes[order]
    y_s = y[order].astype(bool)
    sizes = np.bincount(codes, minlength=n_groups).astype(np.int64)
    n1 = np.bincount(codes, weights=y, minlength=n_groups).round().astype(np.int64)
    n0 = sizes - n1
    group_start = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
    block_id, twice_mid_global = _twice_midranks((key_s,), n)
    # a tie block never spans two groups, so subtracting the group's start turns the global
    # midrank into the within-group one
    twice_mid = twice_mid_global[block_id] - 2 * group_start[g_s]
    twice_r1 = np.bincount(g_s[y_s], weights=twice_mid[y_s].astype(np.float64),
                           minlength=n_groups)
    valid = (n1 > 0) & (n0 > 0)
    aucs = np.full(n_groups, np.nan)
    denom = 2.0 * n1[valid].astype(np.float64) * n0[valid].astype(np.float64)
    aucs[valid] = (twice_r1[valid] - n1[valid] * (n1[valid] + 1.0)) / denom
    return aucs, sizes, n1


def gauc(y: Any, p: Any, groups: Any) -> float:
    """Group AUC: the AUC within each group, averaged with weights = group impressions.

    ``GAUC = sum_g n_g AUC_g / sum_g n_g`` over the groups ``g`` (e.g. users) whose labels hold
    both classes; ``n_g`` is the number of rows (impressions) of group ``g``. Groups with a
    single class have no AUC and are left out of both sums. Each ``AUC_g`` is exact with ties
    counted one half, as :func:`auc`.

    Vectorised, no Python loop over groups: integer group ids are densified by counting
    (other dtypes, e.g. strings, by ``np.unique``, which is slower), the rows are sorted once
    by the int64 key (group, dense score rank), and per-group midrank sums come from
    ``np.bincount``. About one second for 1M rows in 100k integer groups on two CPU cores.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary labels.
    p : array-like of shape (n,)
        Scores.
    groups : array-like of shape (n,)
        Group key of each row (any sortable dtype: ints, strings).

    Returns
    -------
    float
        The impression-weighted mean AUC; ``nan`` when no group has both classes.

    References
    ----------
    Zhu, H. et al. (2017). Optimized cost per click in Taobao display advertising. KDD 2017.
    Zhou, G. et al. (2018). Deep Interest Network for click-through rate prediction.
    KDD 2018 (DIN), eq. (6), user-weighted GAUC.
    """
    y_arr, p_arr = _yp(y, p)
    codes, n_groups = _group_codes(groups, len(y_arr))
    if n_groups == 0:
        return float("nan")
    aucs, sizes, _ = _grouped_auc(y_arr, p_arr, codes, n_groups)
    valid = ~np.isnan(aucs)
    if not valid.any():
        return float("nan")
    w = sizes[valid].astype(np.float64)
    return float(np.dot(w, aucs[valid]) / w.sum())


# --------------------------------------------------------------------------------------------
# probabilistic and calibration metrics
# --------------------------------------------------------------------------------------------

def logloss(y: Any, p: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy with predictions clipped to ``[eps, 1 - eps]``.

    ``-mean(y log p + (1 - y) log(1 - p))`` after ``p = clip(p, eps, 1 - eps)``; the clipping
    keeps one confidently wrong prediction from making the loss infinite.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary labels.
    p : array-like of shape (n,)
        Predicted probabilities of the positive class.
    eps : float, default 1e-7
        Clipping bound, in (0, 0.5).

    Returns
    -------
    float
        The mean log loss in nats; ``nan`` on empty input.
    """
    if not 0.0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5); got {eps}")
    y_arr, p_arr = _yp(y, p)
    if len(y_arr) == 0:
        return float("nan")
    pc = np.clip(p_arr, eps, 1.0 - eps)
    return float(-np.mean(y_arr * np.log(pc) + (1.0 - y_arr) * np.log1p(-pc)))


def pcoc(y: Any, p: Any) -> float:
    """Predicted clicks (or conversions) over observed ones: ``sum(p) / sum(y)``.

    1 is calibrated on average; above 1 over-predicts (and overbids, in oCPX), below 1
    under-predicts.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary labels.
    p : array-like of shape (n,)
        Predicted probabilities.

    Returns
    -------
    float
        ``sum(p) / sum(y)``. When ``sum(y) == 0`` it is undefined: ``inf`` if ``sum(p) > 0``
        and ``nan`` if ``sum(p) == 0`` (also for empty input).

    References
    ----------
    He, X. et al. (2014). Practical lessons from predicting clicks on ads at Facebook.
    ADKDD 2014 (the "calibration" ratio of expected to observed clicks).
    """
    y_arr, p_arr = _yp(y, p)
    sy, sp = float(y_arr.sum()), float(p_arr.sum())
    if sy == 0.0:
        return float("inf") if sp > 0.0 else float("nan")
    return sp / sy


def _bin_ids(p: np.ndarray, n_bins: int, binning: str) -> np.ndarray:
    """The bin (0..n_bins-1) of each prediction under ``binning``."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int; got {n_bins!r}")
    n_bins = int(n_bins)
    if binning == "equal_width":
        if len(p) and (p.min() < 0.0 or p.max() > 1.0):
            raise ValueError("equal-width binning needs predictions in [0, 1]; got "
                             f"[{p.min()}, {p.max()}]")
        return np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    if binning == "equal_frequency":
        n = len(p)
        order = np.argsort(p, kind="stable")
        # the chunk sizes of np.array_split(order, n_bins): the first n % n_bins chunks hold
        # one row more
        base, extra = divmod(n, n_bins)
        sizes = np.full(n_bins, base, dtype=np.int64)
        sizes[:extra] += 1
        ids = np.empty(n, dtype=np.int64)
        ids[order] = np.repeat(np.arange(n_bins, dtype=np.int64), sizes)
        return ids
    raise ValueError(f"binning must be one of {BINNINGS}; got {binning!r}")


def _binned(y: np.ndarray, p: np.ndarray, n_bins: int,
            binning: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = _bin_ids(p, n_bins, binning)
    counts = np.bincount(ids, minlength=n_bins).astype(np.int64)
    sum_y = np.bincount(ids, weights=y, minlength=n_bins)
    sum_p = np.bincount(ids, weights=p, minlength=n_bins)
    return counts, sum_y, sum_p


def reliability_curve(y: Any, p: Any, n_bins: int = 10,
                      binning: str = "equal_frequency"
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin mean prediction, mean label and row count: the points of a reliability diagram.

    The bins are those of :func:`ece` (same ``n_bins`` and ``binning``, same tie handling).

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary labels.
    p : array-like of shape (n,)
        Predicted probabilities (in [0, 1] for ``"equal_width"``).
    n_bins : int, default 10
        Number of bins.
    binning : {"equal_frequency", "equal_width"}, default "equal_frequency"
        See :func:`ece`.

    Returns
    -------
    mean_p, mean_y, counts : ndarray of shape (n_bins,)
        Bins in increasing order of prediction. An empty bin has ``counts == 0`` and ``nan``
        means (matplotlib leaves a gap there); drop them with ``counts > 0`` if needed.
    """
    y_arr, p_arr = _yp(y, p)
    counts, sum_y, sum_p = _binned(y_arr, p_arr, n_bins, binning)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(counts > 0, sum_p / counts, np.nan)
        mean_y = np.where(counts > 0, sum_y / counts, np.nan)
    return mean_p, mean_y, counts


def ece(y: Any, p: Any, n_bins: int = 10, binning: str = "equal_frequency") -> float:
    """Expected calibration error: ``sum_b n_b / N * |mean_b(y) - mean_b(p)|``.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary labels.
    p : array-like of shape (n,)
        Predicted probabilities.
    n_bins : int, default 10
        Number of bins. The project reports equal-frequency with 10 bins
        (:func:`ece_equal_frequency`) and equal-width with 100 bins (:func:`ece_equal_width`).
    binning : {"equal_frequency", "equal_width"}, default "equal_frequency"
        - ``"equal_width"``: bins ``[k/n_bins, (k+1)/n_bins)`` on [0, 1]; ``p == 1`` falls in
          the last bin. Predictions outside [0, 1] raise ``ValueError``. Empty bins add 0.
        - ``"equal_frequency"``: the rows sorted by ``p`` (stable sort) are cut into
          ``n_bins`` consecutive chunks of nearly equal size, exactly as
          ``np.array_split(np.argsort(p, kind="stable"), n_bins)`` (the first ``N % n_bins``
          chunks hold one row more). Ties: rows with equal ``p`` may be split across two
          adjacent bins; which rows go where follows their input order (the stable sort), so
          the value is deterministic but can depend on row order when a tie straddles a
          boundary. With ``N < n_bins`` some bins are empty and add 0.

    Returns
    -------
    float
        The ECE in [0, 1] for ``p`` in [0, 1]; ``nan`` on empty input.

    References
    ----------
    Naeini, M. P., Cooper, G. F. and Hauskrecht, M. (2015). Obtaining well calibrated
    probabilities using Bayesian binning. AAAI 2015.
    Guo, C. et al. (2017). On calibration of modern neural networks. ICML 2017.
    """
    y_arr, p_arr = _yp(y, p)
    counts, sum_y, sum_p = _binned(y_arr, p_arr, n_bins, binning)
    n = len(y_arr)
    if n == 0:
        return float("nan")
    # n_b/N * |sum_y/n_b - sum_p/n_b| == |sum_y - sum_p| / N (0 for an empty bin)
    return float(np.abs(sum_y - sum_p).sum() / n)


def ece_equal_frequency(y: Any, p: Any, n_bins: int = 10) -> float:
    """:func:`ece` with equal-frequency bins (10 by default), the project's first ECE."""
    return ece(y, p, n_bins=n_bins, binning="equal_frequency")


def ece_equal_width(y: Any, p: Any, n_bins: int = 100) -> float:
    """:func:`ece` with equal-width bins on [0, 1] (100 by default), the project's second ECE."""
    return ece(y, p, n_bins=n_bins, binning="equal_width")


def _field_sums(y: Any, p: Any, field: Any):
    return _group_sums(*_yp(y, p), field)


def _group_sums(reference: np.ndarray, p: np.ndarray, field: Any):
    """Rows, and per value of ``field``: row count, sum of ``reference`` (labels or true
    probabilities), sum of ``p``."""
    codes, n_groups = _group_codes(field, len(reference), "field")
    counts = np.bincount(codes, minlength=n_groups).astype(np.float64)
    sum_ref = np.bincount(codes, weights=reference, minlength=n_groups)
    sum_p = np.bincount(codes, weights=p, minlength=n_groups)
    return len(reference), counts, sum_ref, sum_p


def _relative_count_error(n: int, counts: np.ndarray, sum_ref: np.ndarray,
                          sum_p: np.ndarray) -> float:
    """``(1/N) sum_z N_z |sum_ref_z - sum_p_z| / sum_ref_z`` over the values with
    ``sum_ref > 0`` (``nan`` when ``n`` is 0): Field-RCE's formula."""
    if n == 0:
        return float("nan")
    pos = sum_ref > 0
    return float((counts[pos] * np.abs(sum_ref[pos] - sum_p[pos]) / sum_ref[pos]).sum() / n)


def field_rce(y: Any, p: Any, field: Any) -> float:
    """Field-level relative calibration error.

    ``Field-RCE = (1/N) * sum_z N_z * |sum_{i in z} (y_i - p_i)| / sum_{i in z} y_i``

    over the values ``z`` of ``field`` (e.g. media app, category) that have at least one
    positive; ``N_z`` is the number of rows with value ``z`` and ``N`` the number of all rows,
    including the rows of values without positives (those add to ``N`` but not to the sum).
    Each term is the relative error of the predicted count, weighted by the slice's share of
    traffic: for a CVR model it is the relative over- or under-bid on that slice.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary labels.
    p : array-like of shape (n,)
        Predicted probabilities.
    field : array-like of shape (n,)
        The field value of each row.

    Returns
    -------
    float
        The Field-RCE (>= 0); ``nan`` on empty input. 0 when no value has positives.

    References
    ----------
    Pan, F. et al. (2020). Field-aware calibration: a simple and empirically strong method for
    reliable probabilistic predictions. WWW 2020 (defines Field-ECE and Field-RCE).
    Wei, P. et al. (2022). Posterior probability matters: doubly-adaptive calibration for
    neural predictions in online advertising (AdaCalib). SIGIR 2022 (reports Field-RCE).
    """
    return _relative_count_error(*_field_sums(y, p, field))


def field_rce_truth(p_true: Any, p: Any, field: Any) -> float:
    """Field-RCE against the true probabilities instead of the labels.

    ``(1/N) * sum_z N_z * |sum_{i in z} (p_i - t_i)| / sum_{i in z} t_i`` over the values
    ``z`` of ``field`` with ``sum t > 0``, weighted like :func:`field_rce` (``t``: the true
    conversion probability of each row, which only a simulator knows). A value with a dozen
    conversions has a label-noise floor in :func:`field_rce` that hides every calibrator; this
    one measures the error of the predicted count itself (our choice, for the generated
    worlds; not in the papers).

    Parameters
    ----------
    p_true : array-like of shape (n,)
        True probabilities in [0, 1].
    p : array-like of shape (n,)
        Predicted probabilities.
    field : array-like of shape (n,)
        The field value of each row.

    Returns
    -------
    float
        ``nan`` on empty input; 0 when no value has a positive true mass.
    """
    t, q = _scores(p_true, "p_true"), _scores(p)
    _same_length(p_true=t, p=q)
    return _relative_count_error(*_group_sums(t, q, field))


def field_ece(y: Any, p: Any, field: Any) -> float:
    """Field-level expected calibration error.

    ``Field-ECE = (1/N) * sum_z N_z * |mean_z(y) - mean_z(p)|``
    ``= (1/N) * sum_z |sum_{i in z} (y_i - p_i)|``

    over all values ``z`` of ``field``: the ECE with the field values as bins.

    Parameters
    ----------
    y : array-like of shape (n,)
        Binary labels.
    p : array-like of shape (n,)
        Predicted probabilities.
    field : array-like of shape (n,)
        The field value of each row.

    Returns
    -------
    float
        The Field-ECE (>= 0); ``nan`` on empty input.

    References
    ----------
    Pan, F. et al. (2020). Field-aware calibration: a simple and empirically strong method for
    reliable probabilistic predictions. WWW 2020.
    """
    n, _, sum_y, sum_p = _field_sums(y, p, field)
    if n == 0:
        return float("nan")
    return float(np.abs(sum_y - sum_p).sum() / n)


# --------------------------------------------------------------------------------------------
# the evaluation protocol
# --------------------------------------------------------------------------------------------

def _has(frame: Any, key: str) -> bool:
    try:
        return key in frame and frame[key] is not None
    except TypeError:
        return False


def _col(frame: Any, key: str) -> np.ndarray:
    if not _has(frame, key):
        raise KeyError(f"evaluate_predictions: the input has no '{key}' column")
    return np.asarray(frame[key]).reshape(-1)


def evaluate_predictions(frame: Mapping[str, Any]) -> Dict[str, float]:
    """Every metric of the evaluation protocol on one table of predictions.

    Parameters
    ----------
    frame : dict of array-like or pandas.DataFrame
        One row per test impression. Required: ``click``, ``purchase`` (binary labels; a
        purchase implies a click), ``pctr`` (model pCTR) and ``pcvr`` (model pCVR =
        p(purchase | click), predicted on every row). Optional: ``purchase_counterfactual``
        (would the impression have converted had it been clicked; simulator only),
        ``p_click`` and ``p_purchase_given_click`` (the simulator's true probabilities),
        ``user_id``, ``app_id``, ``category_id``. An optional column that is absent (or
        ``None``) drops the keys that need it.

    Returns
    -------
    dict of str to float or int
        Flat; "clicked" means computed on the rows with ``click == 1`` (D_click), otherwise on
        all rows (D). AUC-type values are ``nan`` where a slice has a single class.

        Counts:

        - ``n_impressions``: number of rows.
        - ``n_clicks``: ``sum(click)``.
        - ``n_purchases``: ``sum(purchase)``.
        - ``n_counterfactual_purchases``: ``sum(purchase_counterfactual)`` (if present).

        Ranking:

        - ``ctr_auc``: :func:`auc` of ``pctr`` vs ``click`` on D.
        - ``cvr_auc_clicked``: AUC of ``pcvr`` vs ``purchase`` on D_click (the papers' CVR AUC).
        - ``ctcvr_auc``: AUC of ``pctr * pcvr`` vs ``click * purchase`` on D.
        - ``entire_space_cvr_auc``: AUC of ``pcvr`` vs ``purchase_counterfactual`` on D
          (if ``purchase_counterfactual`` is present): the main debiasing metric.
        - ``oracle_ctr_auc``: AUC of ``p_click`` vs ``click`` on D (if ``p_click``).
        - ``oracle_cvr_auc_clicked``: AUC of ``p_purchase_given_click`` vs ``purchase`` on
          D_click (if ``p_purchase_given_click``).
        - ``oracle_ctcvr_auc``: AUC of ``p_click * p_purchase_given_click`` vs
          ``click * purchase`` on D (if both).
        - ``oracle_entire_space_cvr_auc``: AUC of ``p_purchase_given_click`` vs
          ``purchase_counterfactual`` on D (if both).
        - ``ctr_gauc_user``: :func:`gauc` of ``pctr`` vs ``click`` by ``user_id`` on D
          (if ``user_id``).
        - ``cvr_gauc_user_clicked``: GAUC of ``pcvr`` vs ``purchase`` by ``user_id`` on
          D_click (if ``user_id``).

        Loss and calibration:

        - ``ctr_logloss``: :func:`logloss` of ``pctr`` vs ``click`` on D.
        - ``cvr_logloss_clicked``: log loss of ``pcvr`` vs ``purchase`` on D_click.
        - ``cvr_pcoc_clicked``: :func:`pcoc` of ``pcvr`` vs ``purchase`` on D_click.
        - ``cvr_ece_eqfreq10_clicked``: :func:`ece_equal_frequency` (10 bins) of ``pcvr`` vs
          ``purchase`` on D_click.
        - ``cvr_ece_eqwidth100_clicked``: :func:`ece_equal_width` (100 bins), same rows.
        - ``field_rce_app`` / ``field_ece_app``: :func:`field_rce` / :func:`field_ece` of
          ``pcvr`` vs ``purchase`` on D_click, field ``app_id`` (if ``app_id``).
        - ``field_rce_category`` / ``field_ece_category``: the same with field
          ``category_id`` (if ``category_id``).
    """
    click = _labels(_col(frame, CLICK), CLICK)
    purchase = _labels(_col(frame, PURCHASE), PURCHASE)
    pctr = _scores(_col(frame, PCTR), PCTR)
    pcvr = _scores(_col(frame, PCVR), PCVR)
    _same_length(click=click, purchase=purchase, pctr=pctr, pcvr=pcvr)
    clicked = click == 1.0
    ctcvr_label = click * purchase

    out: Dict[str, Any] = {
        "n_impressions": int(len(click)),
        "n_clicks": int(click.sum()),
        "n_purchases": int(purchase.sum()),
    }
    cf = None
    if _has(frame, PURCHASE_COUNTERFACTUAL):
        cf = _labels(_col(frame, PURCHASE_COUNTERFACTUAL), PURCHASE_COUNTERFACTUAL)
        _same_length(click=click, purchase_counterfactual=cf)
        out["n_counterfactual_purchases"] = int(cf.sum())

    out["ctr_auc"] = auc(click, pctr)
    out["cvr_auc_clicked"] = auc(purchase[clicked], pcvr[clicked])
    out["ctcvr_auc"] = auc(ctcvr_label, pctr * pcvr)
    if cf is not None:
        out["entire_space_cvr_auc"] = auc(cf, pcvr)

    p_click = _scores(_col(frame, P_CLICK), P_CLICK) if _has(frame, P_CLICK) else None
    p_cvr = (_scores(_col(frame, P_PURCHASE_GIVEN_CLICK), P_PURCHASE_GIVEN_CLICK)
             if _has(frame, P_PURCHASE_GIVEN_CLICK) else None)
    if p_click is not None:
        _same_length(click=click, p_click=p_click)
        out["oracle_ctr_auc"] = auc(click, p_click)
    if p_cvr is not None:
        _same_length(click=click, p_purchase_given_click=p_cvr)
        out["oracle_cvr_auc_clicked"] = auc(purchase[clicked], p_cvr[clicked])
    if p_click is not None and p_cvr is not None:
        out["oracle_ctcvr_auc"] = auc(ctcvr_label, p_click * p_cvr)
    if p_cvr is not None and cf is not None:
        out["oracle_entire_space_cvr_auc"] = auc(cf, p_cvr)

    if _has(frame, USER_ID):
        users = _col(frame, USER_ID)
        if len(users) != len(click):
            raise ValueError(f"'{USER_ID}' must have {len(click)} rows; got {len(users)}")
        out["ctr_gauc_user"] = gauc(click, pctr, users)
        out["cvr_gauc_user_clicked"] = gauc(purchase[clicked], pcvr[clicked], users[clicked])

    out["ctr_logloss"] = logloss(click, pctr)
    out["cvr_logloss_clicked"] = logloss(purchase[clicked], pcvr[clicked])
    out["cvr_pcoc_clicked"] = pcoc(purchase[clicked], pcvr[clicked])
    out["cvr_ece_eqfreq10_clicked"] = ece_equal_frequency(purchase[clicked], pcvr[clicked])
    out["cvr_ece_eqwidth100_clicked"] = ece_equal_width(purchase[clicked], pcvr[clicked])

    for key, suffix in ((APP_ID, "app"), (CATEGORY_ID, "category")):
        if _has(frame, key):
            field = _col(frame, key)
            if len(field) != len(click):
                raise ValueError(f"'{key}' must have {len(click)} rows; got {len(field)}")
            out[f"field_rce_{suffix}"] = field_rce(purchase[clicked], pcvr[clicked],
                                                   field[clicked])
            out[f"field_ece_{suffix}"] = field_ece(purchase[clicked], pcvr[clicked],
                                                   field[clicked])
    return out


# --------------------------------------------------------------------------------------------
# aggregation over seeds
# --------------------------------------------------------------------------------------------

def mean_std(values: Iterable[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of per-seed metric values.

    Parameters
    ----------
    values : iterable of float
        One value per seed (at least one).

    Returns
    -------
    (mean, std) : tuple of float
        ``std`` is 0.0 for a single value. NaN values propagate.
    """
    arr = np.asarray(list(values), dtype=np.float64).reshape(-1)
    if len(arr) == 0:
        raise ValueError("mean_std needs at least one value")
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
    return mean, std


def format_mean_std(values: Iterable[float], digits: int = 4) -> str:
    """``"mean ± std"`` with ``digits`` decimals, e.g. ``"0.6856 ± 0.0037"``; one value alone
    (``"0.6856"``: a single seed has no spread to show)."""
    values = list(values)
    mean, std = mean_std(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def intervals_overlap(a_values: Iterable[float], b_values: Iterable[float]) -> bool:
    """Whether the intervals ``mean ± std`` of two sets of per-seed values overlap.

    The project calls a gain real only when this is ``False``. Intervals that merely touch
    count as overlapping, and so does any NaN mean or std (no gain can be claimed then).
    """
    ma, sa = mean_std(a_values)
    mb, sb = mean_std(b_values)
    if any(math.isnan(v) for v in (ma, sa, mb, sb)):
        return True
    return bool(abs(ma - mb) <= sa + sb)
