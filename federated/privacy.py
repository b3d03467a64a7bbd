"""Privacy defences of the split training, and the label-leak attacks they are measured by.

Forward (media -> advertiser): :class:`EmbeddingDP` clips each sample's embedding to L2 norm
``clip`` and adds Gaussian noise (the Gaussian mechanism, Dwork & Roth 2014, Section 3.5.3).
Neighbouring datasets differ in one sample's media features (replace-one), so the L2
sensitivity of a release is ``2 * clip`` and the noise standard deviation is
``noise_multiplier * 2 * clip``. Each sample's embedding is released once per epoch (and a
validation or test sample once per evaluation pass), so a run's (epsilon, delta) is the
``releases``-fold composition, accounted with ``dp-accounting``'s PLD accountant
(:func:`epsilon_for`, :func:`noise_multiplier_for`). What this does not bound: the media's
bottom weights are trained on every sample, so a released embedding of sample j also depends
on sample i through those weights; bounding that would need DP-SGD on the bottom network too
(docs/federated.md, privacy).

Backward (advertiser -> media): the gradient of the loss with respect to each sample's
embedding leaks the label (Li et al., "Label Leakage and Protection in Two-party Split
Learning", ICLR 2022): positives have larger gradient norms (:func:`norm_attack_scores`),
same-label gradients point the same way (:func:`direction_attack_scores`), and a batch's first
principal component separates the rare class (:func:`pca_attack_scores`). Defences
(:func:`perturb_gradients`), on by default (``marvell`` with ``max_norm``):

- ``marvell`` (Li et al. 2022, Section 4.2; ``federated.marvell``): per batch, the class-
  dependent Gaussian noise that minimises the symmetrised KL divergence of the two classes'
  perturbed gradients under the power budget ``marvell_power x ||m1 - m0||^2``, which bounds the
  leak AUC of *any* attack on one gradient by ``1/2 + sqrt(sumKL / 8)`` under the paper's
  Gaussian model (reported per run);
- ``max_norm`` (Li et al. 2022, Section 4.1): each row gets isotropic Gaussian noise whose
  expected squared norm lifts it to the batch's largest squared gradient norm, so every row's
  expected norm is the same; alone (``method: max_norm``) or after Marvell (``max_norm: true``).
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

DEFENCES = ("none", "max_norm", "marvell")


def secure_generator() -> np.random.Generator:
    """A numpy generator seeded from the operating system's secure RNG (``secrets``): noise
    that a party cannot reproduce, and no seed in any file or log."""
    return np.random.Generator(np.random.PCG64(secrets.randbits(128)))


@functools.lru_cache(maxsize=64)
def epsilon_for(noise_multiplier: float, releases: int, delta: float) -> float:
    """The epsilon at ``delta`` of ``releases`` Gaussian releases of one sample with noise
    ``noise_multiplier`` (standard deviation over sensitivity): PLD accountant of
    ``dp-accounting`` (Google's DP library)."""
    import dp_accounting
    from dp_accounting import pld
    if noise_multiplier <= 0:
        return float("inf")
    accountant = pld.PLDAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(
        dp_accounting.GaussianDpEvent(noise_multiplier), int(releases)))
    return float(accountant.get_epsilon(delta))


def noise_multiplier_for(epsilon: float, releases: int, delta: float,
                         tolerance: float = 1e-3) -> float:
    """The smallest noise multiplier whose ``releases``-fold composition is
    (``epsilon``, ``delta``)-DP (bisection on :func:`epsilon_for`, which falls with noise)."""
    if epsilon <= 0 or not 0 < delta < 1:
        raise ValueError(f"need epsilon > 0 and 0 < delta < 1, got {epsilon}, {delta}")
    lo, hi = 0.05, 1.0
    while epsilon_for(round(hi, 6), releases, delta) > epsilon:
        lo, hi = hi, hi * 2
        if hi > 1e4:
            raise ValueError(f"epsilon {epsilon} at delta {delta} needs absurd noise")
    while hi - lo > tolerance:
        mid = round((lo + hi) / 2, 6)
        if epsilon_for(mid, releases, delta) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class DPConfig:
    """Differential privacy of the forward embeddings.

    Args:
        epsilon: target epsilon of the run (0 = no noise, no clipping).
        delta: target delta (default 1e-7: below 1 / rows of the 4M-row default data).
        clip: L2 norm each sample's embedding is clipped to.
    """

    epsilon: float = 0.0
    delta: float = 1e-7
    clip: float = 1.0

    def __post_init__(self):
        if self.epsilon < 0:
            raise ValueError(f"dp epsilon must be >= 0 (0 = off), got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"dp delta must be in (0, 1), got {self.delta}")
        if self.clip <= 0:
            raise ValueError(f"dp clip must be > 0, got {self.clip}")

    @property
    def enabled(self) -> bool:
        """Whether embeddings are clipped and noised."""
        return self.epsilon > 0


class EmbeddingDP:
    """Clip-and-noise of the embeddings a party sends (the Gaussian mechanism).

    ``noise_std`` is ``noise_multiplier * 2 * clip`` (replace-one sensitivity); noise is drawn
    from :func:`secure_generator`. ``releases`` is how often one sample's embedding is sent:
    once per epoch for a training sample (an evaluated sample is sent once per pass).
    """

    def __init__(self, config: DPConfig, releases: int = 1,
                 rng: Optional[np.random.Generator] = None):
        if releases < 1:
            raise ValueError(f"releases must be >= 1, got {releases}")
        self.config, self.releases = config, int(releases)
        self.noise_multiplier = (noise_multiplier_for(config.epsilon, releases,
                                                      config.delta) if config.enabled else 0.0)
        self.noise_std = self.noise_multiplier * 2.0 * config.clip
        self.rng = rng or secure_generator()

    def spent(self) -> float:
        """The epsilon actually spent at the configured delta (<= the target)."""
        if not self.config.enabled:
            return float("inf")
        return epsilon_for(self.noise_multiplier, self.releases, self.config.delta)

    def noise(self, embeddings: np.ndarray) -> np.ndarray:
        """``embeddings`` (already clipped, see ``federated.training``) plus Gaussian noise."""
        if not self.config.enabled:
            return embeddings
        return (embeddings + self.rng.normal(0.0, self.noise_std, embeddings.shape)
                ).astype(embeddings.dtype)


def clip_rows(x: np.ndarray, clip: float) -> np.ndarray:
    """Scale each row of ``x`` down to L2 norm ``clip`` where it is longer."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x * np.minimum(1.0, clip / np.maximum(norms, 1e-12))


@dataclass(frozen=True)
class GradientDefenceConfig:
    """Perturbation of the embedding gradients the advertiser returns (on by default).

    Args:
        method: ``marvell`` (default), ``max_norm`` or ``none`` (see the module docstring).
        marvell_power: Marvell's power budget per batch, in units of the squared distance of
            the class-mean gradients (the paper's ``s``).
        max_norm: with ``marvell``, add the max-norm noise after it.
    """

    method: str = "marvell"
    marvell_power: float = 4.0
    max_norm: bool = True

    def __post_init__(self):
        if self.method not in DEFENCES:
            raise ValueError(f"gradient defence must be one of {DEFENCES}, got {self.method!r}")
        if self.marvell_power < 0:
            raise ValueError(f"marvell_power must be >= 0, got {self.marvell_power}")


def _max_norm(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    sq = np.sum(g * g, axis=1)
    std = np.sqrt(np.maximum(sq.max() - sq, 0.0) / g.shape[1])
    return g + rng.normal(0.0, 1.0, g.shape) * std[:, None]


def perturb_gradients(grads: np.ndarray, labels: np.ndarray, config: GradientDefenceConfig,
                      rng: np.random.Generator, state=None) -> Tuple[np.ndarray, Optional[float]]:
    """The gradients to return to the media party under defence ``config``.

    Args:
        grads: ``(batch, width)`` gradients of the loss with respect to each embedding row.
        labels: the protected binary label of each row (used by ``marvell`` only).
        config: the defence.
        rng: the noise source (:func:`secure_generator`).
        state: Marvell's ``federated.marvell.MarvellState`` kept across the batches of a run
            (a one-class batch gets the last mixed batch's noise); None: no memory.

    Returns:
        ``(gradients, sum_kl)``: ``sum_kl`` is the batch's symmetrised KL divergence after
        Marvell (``federated.marvell``; its AUC bound is ``marvell.auc_bound``), None when
        Marvell did not run (another method, or a batch with one class).
    """
    if config.method == "none" or len(grads) == 0:
        return grads, None
    out = grads.astype(np.float64)
    kl = None
    if config.method == "marvell":
        from federated.marvell import perturb
        out, noise = perturb(out, labels, config.marvell_power, rng, state)
        kl = noise.sum_kl if noise is not None else None
    if config.method == "max_norm" or config.max_norm:
        out = _max_norm(out, rng)
    return out.astype(grads.dtype), kl


def norm_attack_scores(grads: np.ndarray) -> np.ndarray:
    """The norm attack's score of each row: its gradient's L2 norm (Li et al. 2022, 3.1)."""
    return np.linalg.norm(np.asarray(grads, dtype=np.float64), axis=1)


def pca_attack_scores(grads: np.ndarray) -> np.ndarray:
    """The batch-PCA attack's score of each row: its projection on the batch's first principal
    component, signed so that the longer tail is positive (the rare class sits in a tail). An
    unsupervised spectral attack of our construction: it needs no known label."""
    g = np.asarray(grads, dtype=np.float64)
    if len(g) < 2:
        return np.zeros(len(g))
    centred = g - g.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    proj = centred @ vt[0]
    skew = float(np.mean(proj ** 3))
    return proj if skew >= 0 else -proj


def direction_attack_scores(grads: np.ndarray, known_positive: int) -> np.ndarray:
    """The direction attack's score of each row: the cosine of its gradient with that of one
    row whose label the attacker knows to be positive (Li et al. 2022, 3.2)."""
    g = np.asarray(grads, dtype=np.float64)
    ref = g[known_positive]
    norms = np.linalg.norm(g, axis=1) * max(np.linalg.norm(ref), 1e-300)
    return (g @ ref) / np.maximum(norms, 1e-300)
