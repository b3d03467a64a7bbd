"""AdaCalib: posterior-guided, field-adaptive calibration (Wei et al., SIGIR 2022).

One strictly increasing piecewise-linear calibration function per value of a field (media
app, category), shrunk toward a global one by how many positives the value has; unseen values
use the global one.
Design (the paper and the project's algorithms reference, section AdaCalib; the choices are ours):

1. **Adaptive buckets.** For each group ``g`` (a field value, or the global group of all rows)
   the rows are sorted by the base logit ``x = logit(p)`` and cut into ``K_g`` equal-frequency
   buckets. ``K_g`` is the largest of ``bucket_candidates`` with at least
   ``min_positives_per_bucket`` positives per bucket on average, so that every bucket's
   posterior is reliable. A value with too few positives for the smallest candidate gets no
   key points of its own, only a level correction (step 6).
2. **Posterior statistics.** Per bucket: rows, positives, mean base probability, and the
   posterior rate ``(pos + m mean_p) / (n + m)`` (``m = prior_strength`` pseudo-rows).
3. **Key points from an MLP.** An MLP maps [bucket statistics, group embedding] to an offset
   ``o`` and a raw increment ``u`` per bucket. Key points (logits) at the bucket boundaries
   ``x_0 < ... < x_K``: ``c_0 = x_0 + o_1`` and
   ``c_k = c_{k-1} + (x_k - x_{k-1}) * (min_slope + softplus(u_k + s))`` with ``s`` such that
   a zero output gives slope 1: every bucket's slope is at least ``min_slope`` > 0, so ``c`` is
   strictly increasing (flat pieces would tie rows and lower AUC); with a zero last layer the
   function starts as the identity. The calibrated logit is the linear interpolation of the key
   points inside the bucket; beyond the fitted range it continues with slope 1 for
   ``tail_width`` logits (not flat).
4. **Training.** Cross-entropy on the calibration split, of the row's own value function (when
   it has one) and of the global function (always), minimised by L-BFGS (full batch). The calibrated logit is
   linear in the position ``t`` inside a bucket, so rows are aggregated per bucket into
   ``T_BINS`` sub-bins of ``t`` (count, positives, mean ``t``) and the loss is evaluated on
   those: a step costs the same for 10k or 10M rows (the cross-entropy at the sub-bin's mean
   ``t``, a first-order approximation over a 1/32-bucket-wide bin). ``max_fit_rows`` can
   subsample the rows; the bucket statistics always use every row. The MLP and its exact gradient
   are plain numpy (the problem is a few thousand aggregated pairs), so fitting needs no
   TensorFlow either.
5. **Several fields** (our choice): the fields are chained in the given order: the first
   field's calibrated output is the second field's input, and so on. Each step is monotone,
   so the composition is monotone; each later field corrects what the earlier ones left
   (one backfitting pass), and an unseen value at any step uses that step's global function.
6. **Shrinkage toward the global function** (our choice; robustness at small per-value
   data). Let ``G`` be the global function. Each seen value ``v`` gets a level offset ``o_v``
   (in logits) such that its expected positives ``E_v = sum sigmoid(G(x_i))`` are multiplied
   by the Gamma-Poisson posterior mean ``(pos_v + shrink_level) / (E_v + shrink_level)``
   (prior: multiplier 1); a value with buckets of its own (key points ``F_v``) then gets
   ``(1 - w_v) (G + o_v) + w_v F_v`` with ``w_v = pos_v / (pos_v + shrink_shape)``. A convex
   blend of increasing piecewise-linear functions is increasing and piecewise linear on the
   union of their knots, so it is exported exactly. There is no hard fallback for seen values:
   a value with 2 positives gets a small, shrunk level correction, one with 1000 its own shape.
   Only unseen values use ``G`` alone.

Once trained, the key points are fixed: the export is one ``per_value`` stage per field
(knots in logit space per value, global fallback), evaluated with numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from calibration.artifact import ArtifactCalibrator, _floats, logit, sigmoid
from calibration.base import Calibrator
from calibration.neucalib import subsample
from common.params import check_param

_SOFTPLUS_ONE = math.log(math.e - 1.0)          # softplus(_SOFTPLUS_ONE) == 1
N_FEATURES = 9
#: Columns of the bucket statistics (``_group_buckets``) each ``feature_set`` keeps.
FEATURE_SETS = {
    "all": tuple(range(N_FEATURES)),
    "posterior": (0, 1, 2, 3, 4, 8),      # width, gap, posterior, boundaries, global flag
    "geometry": (0, 3, 4, 8),             # width, boundaries, global flag
}
#: Sub-bins of the position t inside a bucket over which training rows are aggregated.
T_BINS = 32


@dataclass(frozen=True)
class AdaCalibConfig:
    """AdaCalib.

    Args:
        bucket_candidates: the bucket counts ``K`` a group may get (increasing).
        min_positives_per_bucket: average positives per bucket that ``K`` must allow.
        prior_strength: pseudo-rows pulling a bucket's posterior toward its mean prediction.
        hidden_units: MLP hidden layers.
        embedding_dim: width of the group (field value) embedding.
        max_iter: L-BFGS iterations (full batch).
        l2: L2 penalty on the MLP weights and embeddings.
        max_fit_rows: train the MLP on at most this many rows (0 = all); statistics use all.
        seed: seed of the subsample and of the initialisation.
        shrink_level: Gamma-Poisson prior strength (in expected positives) of a value's level
            correction: the value's rate multiplier over the global function is
            ``(positives + shrink_level) / (expected + shrink_level)``, so a value with few
            positives stays near the global function instead of a hard fallback. ``"auto"``:
            empirical Bayes, ``1 /`` the between-value variance of the multiplier estimated
            by moments (what the observed spread exceeds Poisson noise by), clipped to
            ``[shrink_level_min, 1e6]``.
        shrink_level_min: the smallest prior strength ``"auto"`` may choose.
        shrink_shape: positives at which a value's own (MLP) function gets half the weight; the
            rest goes to the global function shifted to the value's level.
        min_slope: smallest slope (calibrated logit per base logit) inside a bucket, so that the
            functions are strictly increasing (no ties, which would lower AUC).
        tail_width: the functions continue with slope 1 for this many logits beyond the
            fitted range (instead of flat ends that tie every row out there).
        bucket_mode: how a value's bucket count ``K`` is chosen. ``"rule"``: the largest
            candidate with ``min_positives_per_bucket`` positives per bucket. ``"heldout"``:
            the paper's adaptive bucket count (a hard choice among the candidates per field
            value), made by held-out likelihood: each candidate ``K`` (and "no function of its
            own", level only) is fitted on one half of the calibration rows and scored on the
            other (2-fold), and each value keeps the ``K`` with the lowest held-out
            cross-entropy (candidates need ``heldout_min_positives`` positives per bucket).
        heldout_min_positives: the fewest positives per bucket a candidate needs in
            ``"heldout"`` mode.
        shrinkage: ``False`` turns the shrinkage toward the global function off (issue 33: it
            stays an option, measured on and off): each seen value gets its own level,
            ``positives / expected`` exactly (a seen value without a positive is driven to a
            probability near 0), and a value with buckets its own function alone
            (``shrink_level`` and ``shrink_shape`` are then unused).
        feature_set: the bucket statistics the key-point MLP sees: ``"all"``; ``"posterior"``
            (the posterior rate and its gap to the prediction, with the bucket geometry, no
            counts); ``"geometry"`` (bucket boundaries and width only: an ablation without
            posterior statistics).
    """

    bucket_candidates: Tuple[int, ...] = (2, 4, 8, 16, 32)
    min_positives_per_bucket: int = 10
    prior_strength: float = 10.0
    hidden_units: Tuple[int, ...] = (32, 16)
    embedding_dim: int = 4
    max_iter: int = 150
    l2: float = 1e-6
    max_fit_rows: int = 0
    seed: int = 0
    shrink_level: Any = "auto"
    shrink_level_min: float = 3.0
    shrink_shape: float = 30.0
    min_slope: float = 0.02
    tail_width: float = 20.0
    bucket_mode: str = "rule"
    heldout_min_positives: int = 3
    feature_set: str = "all"
    shrinkage: bool = True

    def __post_init__(self):
        object.__setattr__(self, "bucket_candidates", tuple(self.bucket_candidates))
        object.__setattr__(self, "hidden_units", tuple(self.hidden_units))
        bc = self.bucket_candidates
        check_param(len(bc) >= 1 and all(isinstance(k, int) and k >= 1 for k in bc)
                    and list(bc) == sorted(set(bc)), "bucket_candidates",
                    "a non-empty increasing list of ints >= 1", bc)
        check_param(self.min_positives_per_bucket >= 1, "min_positives_per_bucket", ">= 1",
                    self.min_positives_per_bucket)
        check_param(self.prior_strength >= 0, "prior_strength", ">= 0", self.prior_strength)
        check_param(all(u >= 1 for u in self.hidden_units), "hidden_units",
                    "a list of positive ints", self.hidden_units)
        check_param(self.embedding_dim >= 0, "embedding_dim", ">= 0", self.embedding_dim)
        check_param(self.max_iter >= 0, "max_iter", ">= 0", self.max_iter)
        check_param(self.l2 >= 0, "l2", ">= 0", self.l2)
        check_param(self.max_fit_rows >= 0, "max_fit_rows", ">= 0", self.max_fit_rows)
        check_param(self.shrink_level == "auto" or (
            isinstance(self.shrink_level, (int, float)) and self.shrink_level > 0),
            "shrink_level", "'auto' or a number > 0", self.shrink_level)
        check_param(self.shrink_level_min > 0, "shrink_level_min", "> 0", self.shrink_level_min)
        check_param(self.shrink_shape > 0, "shrink_shape", "> 0", self.shrink_shape)
        check_param(0 <= self.min_slope < 1, "min_slope", "in [0, 1)", self.min_slope)
        check_param(self.tail_width >= 0, "tail_width", ">= 0", self.tail_width)
        check_param(self.bucket_mode in ("rule", "heldout"), "bucket_mode",
                    "'rule' or 'heldout'", self.bucket_mode)
        check_param(self.heldout_min_positives >= 1, "heldout_min_positives", ">= 1",
                    self.heldout_min_positives)
        check_param(self.feature_set in FEATURE_SETS, "feature_set",
                    f"one of {sorted(FEATURE_SETS)}", self.feature_set)
        check_param(isinstance(self.shrinkage, bool), "shrinkage", "true or false",
                    self.shrinkage)


def choose_buckets(n_pos: float, candidates: Tuple[int, ...], min_pos: int) -> int:
    """The largest candidate ``K`` with ``n_pos / K >= min_pos``; 0 when none qualifies."""
    ok = [k for k in candidates if n_pos / k >= min_pos]
    return max(ok) if ok else 0


@dataclass
class _Group:
    """One calibration function's buckets and statistics (numpy, before the MLP)."""

    value: Any                   # field value, or None for the global group
    knots: np.ndarray            # K + 1 strictly increasing boundaries (base logits)
    feats: np.ndarray            # (K, N_FEATURES) bucket statistics
    rows: np.ndarray             # row indices of the group (into the fit rows)


def _group_buckets(x: np.ndarray, y: np.ndarray, rows: np.ndarray, k: int, value: Any,
                   cfg: AdaCalibConfig, is_global: bool) -> _Group:
    """Equal-frequency buckets of ``x[rows]`` (already sorted by x) and their statistics."""
    xs = x[rows]
    n = len(xs)
    pos_idx = np.round(np.linspace(0, n - 1, k + 1)).astype(np.int64)
    knots = np.unique(xs[pos_idx])
    if len(knots) < 2:                            # all predictions equal: a flat bucket
        knots = np.array([knots[0] - 1e-3, knots[0] + 1e-3])
    kk = len(knots) - 1
    seg = np.clip(np.searchsorted(knots, xs, side="right") - 1, 0, kk - 1)
    cnt = np.bincount(seg, minlength=kk).astype(float)
    pos = np.bincount(seg, weights=y[rows], minlength=kk)
    mp = np.bincount(seg, weights=sigmoid(xs), minlength=kk) / np.maximum(cnt, 1)
    m = cfg.prior_strength
    post = np.clip((pos + m * mp) / np.maximum(cnt + m, 1e-12), 1e-6, 1 - 1e-6)
    r = logit(post)
    mx = logit(np.clip(mp, 1e-6, 1 - 1e-6))
    feats = np.stack([
        np.diff(knots),                           # bucket width in logits
        r - mx,                                   # posterior minus prediction (miscalibration)
        r / 5.0,                                  # posterior logit
        knots[:-1] / 5.0, knots[1:] / 5.0,        # bucket boundaries
        np.log1p(cnt) / 10.0, np.log1p(pos) / 5.0,
        np.full(kk, kk / 32.0),
        np.full(kk, 1.0 if is_global else 0.0),
    ], axis=1)
    return _Group(value=value, knots=knots, feats=feats, rows=rows)


def _build_groups(x: np.ndarray, y: np.ndarray, col: np.ndarray, cfg: AdaCalibConfig,
                  k_by_value: Optional[Dict[int, int]] = None) -> Tuple[_Group, List[_Group]]:
    """The global group and one group per field value with enough positives (or, with
    ``k_by_value``, the given bucket count per value; 0 or absent: no group)."""
    order = np.argsort(x, kind="stable")
    n_pos = float(y.sum())
    k_glob = max(choose_buckets(n_pos, cfg.bucket_candidates, cfg.min_positives_per_bucket), 1)
    glob = _group_buckets(x, y, order, k_glob, None, cfg, True)
    vals, code = np.unique(col[order], return_inverse=True)
    code = code.reshape(-1)
    by_value = np.argsort(code, kind="stable")    # grouped by value, sorted by x inside
    counts = np.bincount(code, minlength=len(vals))
    pos_by = np.bincount(code, weights=y[order], minlength=len(vals))
    groups, start = [], 0
    for v, c, pv in zip(vals, counts, pos_by):
        rows = order[by_value[start:start + c]]
        start += c
        if k_by_value is None:
            k = choose_buckets(pv, cfg.bucket_candidates, cfg.min_positives_per_bucket)
        else:
            k = k_by_value.get(int(v), 0)
        if k == 0:
            continue
        groups.append(_group_buckets(x, y, rows, k, int(v), cfg, False))
    return glob, groups


class KeyPointNet:
    """The key-point MLP with its forward pass and exact gradient, in numpy.

    Inputs are fixed per fit: bucket features ``feats`` (S, N_FEATURES), the group of each
    bucket, bucket widths (logits), group start offsets and first boundaries, and the
    training pairs aggregated per (bucket, sub-bin of t): bucket, mean t, rows, positives.
    """

    def __init__(self, cfg: AdaCalibConfig, feats, seg_group, widths, seg_start, x0,
                 n_groups: int):
        self.cfg = cfg
        self.feats, self.seg_group, self.widths = feats, seg_group, widths
        self.seg_start, self.x0 = seg_start, x0
        self.first_seg = seg_start[:-1]
        rng = np.random.default_rng(cfg.seed)
        d_in = feats.shape[1] + cfg.embedding_dim
        self.params: Dict[str, np.ndarray] = {"E": rng.normal(0, 0.01, (n_groups,
                                                                         cfg.embedding_dim))}
        for i, units in enumerate(cfg.hidden_units):
            lim = math.sqrt(6.0 / (d_in + units))            # Glorot uniform
            self.params[f"W{i}"] = rng.uniform(-lim, lim, (d_in, units))
            self.params[f"b{i}"] = np.zeros(units)
            d_in = units
        self.params["Wo"] = np.zeros((d_in, 2))               # starts as the identity map
        self.params["bo"] = np.zeros(2)

    def forward(self) -> Tuple[np.ndarray, np.ndarray, Dict[str, Any]]:
        """Key point at each bucket's start (``lo``) and each bucket's increment ``d``."""
        p = self.params
        h = np.concatenate([self.feats, p["E"][self.seg_group]], axis=1)
        hs = [h]
        for i in range(len(self.cfg.hidden_units)):
            h = np.tanh(h @ p[f"W{i}"] + p[f"b{i}"])
            hs.append(h)
        out = h @ p["Wo"] + p["bo"]
        # slope min_slope + softplus(.) > 0 in every bucket; exactly 1 at a zero output
        ms = self.cfg.min_slope
        u = out[:, 1] + math.log(math.expm1(1.0 - ms))
        d = self.widths * (np.logaddexp(0.0, u) + ms)
        c0 = self.x0 + out[self.first_seg, 0]
        cum = np.cumsum(d)
        before_group = np.concatenate(([0.0], cum))[self.seg_start[:-1]]
        lo = c0[self.seg_group] + (cum - d - before_group[self.seg_group])
        return lo, d, {"hs": hs, "u": u}

    def loss_and_grad(self, seg, t, n, pos, n_total):
        """Mean cross-entropy (+ L2) over the aggregated pairs, and its gradient."""
        p, cfg = self.params, self.cfg
        lo, d, cache = self.forward()
        z = lo[seg] + t * d[seg]
        loss = float(np.sum(n * np.logaddexp(0.0, z) - pos * z) / n_total)
        dz = (n * sigmoid(z) - pos) / n_total
        s_count = len(d)
        dlo = np.bincount(seg, weights=dz, minlength=s_count)
        dd = np.bincount(seg, weights=t * dz, minlength=s_count)
        # lo_s = c0[g] + sum of d over the group's earlier buckets
        rev = np.concatenate((np.cumsum(dlo[::-1])[::-1], [0.0]))      # R_s = sum_{s2>=s}
        group_end = self.seg_start[1:][self.seg_group]
        dd += rev[:-1] - rev[group_end] - dlo                          # later buckets in group
        dc0 = np.add.reduceat(dlo, self.seg_start[:-1])
        dout = np.zeros((s_count, 2))
        dout[self.first_seg, 0] = dc0
        dout[:, 1] = dd * self.widths * sigmoid(cache["u"])
        hs = cache["hs"]
        grads = {"Wo": hs[-1].T @ dout, "bo": dout.sum(0)}
        dh = dout @ p["Wo"].T
        for i in reversed(range(len(cfg.hidden_units))):
            da = dh * (1.0 - hs[i + 1] ** 2)
            grads[f"W{i}"] = hs[i].T @ da
            grads[f"b{i}"] = da.sum(0)
            dh = da @ p[f"W{i}"].T
        n_feat = self.feats.shape[1]
        dE = np.zeros_like(p["E"])
        np.add.at(dE, self.seg_group, dh[:, n_feat:])
        grads["E"] = dE
        for k, v in p.items():
            loss += cfg.l2 * float(np.sum(v * v))
            grads[k] = grads[k] + 2.0 * cfg.l2 * v
        return loss, grads

    def train(self, seg, t, n, pos) -> None:
        """Minimise the loss with L-BFGS (full batch, at most ``cfg.max_iter`` iterations)."""
        from scipy.optimize import minimize

        n_total = float(n.sum())
        if n_total == 0 or self.cfg.max_iter == 0:
            return
        names = list(self.params)
        shapes = [self.params[k].shape for k in names]
        sizes = [int(np.prod(sh)) for sh in shapes]

        def unflatten(theta):
            out, pos_ = {}, 0
            for k, sh, sz in zip(names, shapes, sizes):
                out[k] = theta[pos_:pos_ + sz].reshape(sh)
                pos_ += sz
            return out

        def f(theta):
            self.params = unflatten(theta)
            loss, grads = self.loss_and_grad(seg, t, n, pos, n_total)
            return loss, np.concatenate([grads[k].reshape(-1) for k in names])

        theta0 = np.concatenate([self.params[k].reshape(-1) for k in names])
        res = minimize(f, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": self.cfg.max_iter, "ftol": 1e-12, "gtol": 1e-8})
        self.params = unflatten(res.x)
        self.converged = bool(res.success)


def _training_pairs(x, y, all_groups, seg_start, cfg):
    """Rows aggregated per (bucket, sub-bin of t): bucket index, mean t, rows, positives."""
    fit_rows = subsample(len(x), cfg.max_fit_rows, cfg.seed)
    in_fit = np.zeros(len(x), dtype=bool)
    in_fit[fit_rows] = True
    size = int(seg_start[-1]) * T_BINS
    cnt, pos, sum_t = np.zeros(size), np.zeros(size), np.zeros(size)
    for gi, g in enumerate(all_groups):
        rows = g.rows[in_fit[g.rows]]
        kk = len(g.knots) - 1
        xs = x[rows]
        seg = np.clip(np.searchsorted(g.knots, xs, side="right") - 1, 0, kk - 1)
        t = np.clip((xs - g.knots[seg]) / (g.knots[seg + 1] - g.knots[seg]), 0.0, 1.0)
        key = (seg + seg_start[gi]) * T_BINS + np.minimum((t * T_BINS).astype(np.int64),
                                                          T_BINS - 1)
        cnt += np.bincount(key, minlength=size)
        pos += np.bincount(key, weights=y[rows], minlength=size)
        sum_t += np.bincount(key, weights=t, minlength=size)
    keep = np.flatnonzero(cnt)
    return keep // T_BINS, sum_t[keep] / cnt[keep], cnt[keep], pos[keep]


def _key_point_net(all_groups: List[_Group], cfg: AdaCalibConfig):
    """The untrained key-point MLP over the buckets of ``all_groups`` (global first), and the
    start of each group's segments in the concatenated bucket arrays."""
    feats = np.concatenate([g.feats for g in all_groups])[:, list(FEATURE_SETS[cfg.feature_set])]
    seg_group = np.concatenate([np.full(len(g.feats), i) for i, g in enumerate(all_groups)])
    widths = np.concatenate([np.diff(g.knots) for g in all_groups])
    seg_start = np.concatenate(([0], np.cumsum([len(g.feats) for g in all_groups])))
    x0 = np.array([g.knots[0] for g in all_groups])
    net = KeyPointNet(cfg, feats, seg_group, widths, seg_start, x0, len(all_groups))
    return net, seg_start


def _fit_key_points(x: np.ndarray, y: np.ndarray, glob: _Group, groups: List[_Group],
                    cfg: AdaCalibConfig) -> List[np.ndarray]:
    """Train the key-point MLP; returns the key points (logits) of every group, global
    first. The training rows of every function (the global one on all rows, each value's on
    its rows) are aggregated per bucket and sub-bin of t (see the module docstring)."""
    all_groups = [glob] + groups
    net, seg_start = _key_point_net(all_groups, cfg)
    net.train(*_training_pairs(x, y, all_groups, seg_start, cfg))
    lo, d, _ = net.forward()
    out = []
    for gi in range(len(all_groups)):
        s, e = seg_start[gi], seg_start[gi + 1]
        c = np.concatenate(([lo[s]], lo[s] + np.cumsum(d[s:e])))
        out.append(np.maximum.accumulate(c))
    return out


class AdaCalibCalibrator(Calibrator):
    """AdaCalib: one posterior-guided, adaptively bucketed, monotone piecewise-linear function
    per field value, with a global fallback (see the module docstring).

    References:
        Wei, P. et al. (2022). Posterior probability matters: doubly-adaptive calibration for
        neural predictions in online advertising. SIGIR 2022.
    """

    name = "adacalib"
    field_aware = True

    @classmethod
    def default_config(cls):
        return AdaCalibConfig()

    def _fit_spec(self, p, y, cols):
        cfg = self.config
        stages: List[Dict[str, Any]] = []
        meta: Dict[str, Any] = {"buckets": {}, "level_multiplier": {}, "shape_weight": {}}
        q = p
        for f in self.fields:
            x = logit(q)
            k_by_value = None
            if cfg.bucket_mode == "heldout":
                k_by_value, scores = heldout_bucket_counts(x, y, cols[f], f, cfg)
                meta.setdefault("heldout_ce", {})[f] = scores
            stage = _fit_stage(f, x, y, cols[f], cfg, k_by_value)
            glob, groups, info = stage.pop("_glob"), stage.pop("_groups"), stage.pop("_info")
            stages.append(stage)
            meta["buckets"][f] = {"global": len(glob.knots) - 1,
                                  **{str(g.value): len(g.knots) - 1 for g in groups}}
            meta["level_multiplier"][f] = info["level_multiplier"]
            meta["shape_weight"][f] = info["shape_weight"]
            meta.setdefault("shrink_level", {})[f] = info["shrink_level"]
            # the next field calibrates this field's output (chaining)
            partial = {"format": "extcvr.calibrator", "format_version": 1, "fields": [f],
                       "stages": [stage]}
            q = ArtifactCalibrator(partial).transform(q, {f: cols[f]})
        return stages, meta


def _fit_stage(field: str, x: np.ndarray, y: np.ndarray, col: np.ndarray, cfg: AdaCalibConfig,
               k_by_value: Optional[Dict[int, int]] = None) -> Dict[str, Any]:
    """One field's fitted ``per_value`` stage (with its groups and info under private keys)."""
    glob, groups = _build_groups(x, y, col, cfg, k_by_value)
    keys = _fit_key_points(x, y, glob, groups, cfg)
    stage, info = _per_value_stage(field, x, y, col, glob, groups, keys, cfg)
    return {**stage, "_glob": glob, "_groups": groups, "_info": info}


def heldout_bucket_counts(x: np.ndarray, y: np.ndarray, col: np.ndarray, field: str,
                          cfg: AdaCalibConfig) -> Tuple[Dict[int, int], Dict[str, Any]]:
    """The paper's adaptive bucket count as a hard choice per field value, by 2-fold
    held-out cross-entropy over ``K in {0} + bucket_candidates`` (0: no function of its own,
    the global one at the value's level). Every value gets the same ``K`` within a fit, so
    that one candidate's fit is one ordinary AdaCalib fit; each value then keeps its best.

    Returns ``{value: K}`` and the held-out cross-entropy per value and candidate.
    """
    rng = np.random.default_rng(cfg.seed + 7919)
    fold = rng.permutation(len(x)) % 2
    vals, code = np.unique(col, return_inverse=True)
    code = code.reshape(-1)
    ce = np.zeros((len(cfg.bucket_candidates) + 1, len(vals)))
    for ci, k in enumerate((0,) + tuple(cfg.bucket_candidates)):
        for a in (0, 1):
            tr, te = fold == a, fold != a
            pos = np.bincount(code[tr], weights=y[tr], minlength=len(vals))
            k_by_value = {int(v): k for v, pv in zip(vals, pos)
                          if k > 0 and pv / k >= cfg.heldout_min_positives}
            stage = _fit_stage(field, x[tr], y[tr], col[tr], cfg, k_by_value)
            for key in ("_glob", "_groups", "_info"):
                stage.pop(key)
            spec = {"format": "extcvr.calibrator", "format_version": 1, "fields": [field],
                    "stages": [stage]}
            q = np.clip(ArtifactCalibrator(spec).transform(sigmoid(x[te]), {field: col[te]}),
                        1e-7, 1 - 1e-7)
            loss = -(y[te] * np.log(q) + (1 - y[te]) * np.log(1 - q))
            ce[ci] += np.bincount(code[te], weights=loss, minlength=len(vals))
    cands = (0,) + tuple(cfg.bucket_candidates)
    best = {int(v): int(cands[int(np.argmin(ce[:, i]))]) for i, v in enumerate(vals)}
    scores = {str(int(v)): {str(k): float(ce[ci, i]) for ci, k in enumerate(cands)}
              for i, v in enumerate(vals)}
    return best, scores


def with_tails(knots: np.ndarray, c: np.ndarray, lo: float, hi: float
               ) -> Tuple[np.ndarray, np.ndarray]:
    """Knots extended with slope 1 down to ``lo`` and up to ``hi`` (no flat ends)."""
    left, right = knots[0] - lo, hi - knots[-1]
    kx, ky = [knots], [c]
    if left > 0:
        kx.insert(0, [lo])
        ky.insert(0, [c[0] - left])
    if right > 0:
        kx.append([hi])
        ky.append([c[-1] + right])
    return np.concatenate(kx), np.concatenate(ky)


def level_offset(g: np.ndarray, n_pos: float, tau: float) -> Tuple[float, float]:
    """Logit offset ``o`` (and the rate multiplier) with ``sum sigmoid(g + o)`` equal to the
    expected positives ``E = sum sigmoid(g)`` times the Gamma-Poisson posterior mean
    ``(n_pos + tau) / (E + tau)`` of the value's rate multiplier (prior mean 1)."""
    e = float(sigmoid(g).sum())
    mult = (n_pos + tau) / (e + tau)
    target = min(max(e * mult, 1e-9), len(g) * (1 - 1e-9))
    o = 0.0
    for _ in range(50):                      # Newton on a convex, increasing function of o
        s = sigmoid(g + o)
        diff = float(s.sum()) - target
        slope = float((s * (1 - s)).sum())
        if slope <= 0:
            break
        step = float(np.clip(diff / slope, -2.0, 2.0))
        o -= step
        if abs(step) < 1e-10:
            break
    return o, mult


def _per_value_stage(field: str, x: np.ndarray, y: np.ndarray, col: np.ndarray, glob: _Group,
                     groups: List[_Group], keys: List[np.ndarray], cfg: AdaCalibConfig):
    """The exported stage of one field: per value, the blend
    ``(1 - w) (g + o) + w f`` of the global function ``g`` shifted to the value's shrunk level
    ``o`` and the value's own key-point function ``f`` (when it has buckets), with weight
    ``w = pos / (pos + shrink_shape)`` (``w = 1`` and no level prior with ``shrinkage`` off).
    A convex blend of non-decreasing piecewise-linear
    functions is non-decreasing and piecewise linear on the union of their knots, so it is
    exported exactly as knots. Every seen value gets a function; unseen ones the global."""
    lo, hi = glob.knots[0] - cfg.tail_width, glob.knots[-1] + cfg.tail_width
    gx, gy = with_tails(glob.knots, keys[0], lo, hi)
    own = {g.value: (g, c) for g, c in zip(groups, keys[1:])}
    vals, code = np.unique(col, return_inverse=True)
    code = code.reshape(-1)
    order = np.argsort(code, kind="stable")
    counts = np.bincount(code, minlength=len(vals))
    g_all = np.interp(x, gx, gy)
    expected = np.bincount(code, weights=sigmoid(g_all), minlength=len(vals))
    observed = np.bincount(code, weights=y, minlength=len(vals))
    if not cfg.shrinkage:
        tau = 0.0
    elif cfg.shrink_level == "auto":
        tau = empirical_bayes_strength(observed, expected, cfg.shrink_level_min)
    else:
        tau = float(cfg.shrink_level)
    xs_out, ys_out, mults, weights = [], [], {}, {}
    start = 0
    for v, c in zip(vals, counts):
        rows = order[start:start + c]
        start += c
        n_pos = float(y[rows].sum())
        o, mult = level_offset(g_all[rows], n_pos, tau)
        mults[str(int(v))] = mult
        if int(v) in own:
            grp, key = own[int(v)]
            fx, fy = with_tails(grp.knots, key, lo, hi)     # same ends as the global
            w = n_pos / (n_pos + cfg.shrink_shape) if cfg.shrinkage else 1.0
            kx = np.union1d(gx, fx)
            ky = (1 - w) * (np.interp(kx, gx, gy) + o) + w * np.interp(kx, fx, fy)
        else:
            w = 0.0
            kx, ky = gx, gy + o
        weights[str(int(v))] = w
        xs_out.append(_floats(kx))
        ys_out.append(_floats(np.maximum.accumulate(ky)))
    stage = {"type": "per_value", "field": field, "x_space": "logit", "y_space": "logit",
             "values": [int(v) for v in vals], "x": xs_out, "y": ys_out,
             "fallback": {"kind": "interp", "x_space": "logit", "y_space": "logit",
                          "x": _floats(gx), "y": _floats(gy)}}
    return stage, {"level_multiplier": mults, "shape_weight": weights, "shrink_level": tau}


def empirical_bayes_strength(observed: np.ndarray, expected: np.ndarray,
                             lo: float = 3.0, hi: float = 1e6) -> float:
    """Gamma(tau, tau) prior strength of the per-value rate multipliers, by moments.

    With ``r_v = observed_v / expected_v`` and ``m`` the pooled multiplier, Poisson noise alone
    gives ``E[sum_v expected_v (r_v - m)^2] ~ (V - 1) m`` for ``V`` values; the excess over
    that, per expected positive, estimates the prior variance ``1 / tau``. No excess (the
    values differ no more than noise) gives ``hi``: every value keeps the global level.
    """
    keep = expected > 0
    e, o = expected[keep], observed[keep]
    if len(e) < 2 or e.sum() <= 0:
        return hi
    m = o.sum() / e.sum()
    excess = float(np.sum(e * (o / e - m) ** 2) - (len(e) - 1) * m)
    if excess <= 0:
        return hi
    return float(np.clip(e.sum() / excess, lo, hi))
