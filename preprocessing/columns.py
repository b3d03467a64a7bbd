"""Canonical column names and the dataset spec that every producer writes next to its Parquet.

Every dataset extcvr reads (synthetic, Ali-CCP, AliExpress) is a directory of Parquet files plus a
``dataset_spec.json`` that says which column plays which role. The NVTabular workflow, the models
and the federated party split all read roles from the spec, never from hard-coded lists, so that a
real dataset and the simulator go through one code path.

Roles
-----
- ``categorical``: integer ids, Categorify-encoded.
- ``multihot``: list<int64> columns (e.g. the user's recent categories), Categorify-encoded lists.
- ``continuous``: floats; FillMissing -> LogOp (for ``log_continuous``) -> Normalize.
- ``targets``: binary labels of the funnel chain, in chain order (click, cart, purchase).
- ``ground_truth``: simulator-only truth (true probabilities, counterfactual labels). Passed
  through preprocessing, tagged ``ground_truth``, never a model feature.
- ``split``: the time column used to split train / valid / test (``day``).
- media-private columns are the feature columns whose name starts with ``media_``; ``app_id`` is
  the media app that showed the impression, context both parties know.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import List, Tuple

from common.atomic import atomic_write_text

SPEC_FILENAME = "dataset_spec.json"

CLICK = "click"
CART = "cart"
PURCHASE = "purchase"
FUNNEL = (CLICK, CART, PURCHASE)

APP_ID = "app_id"
USER_ID = "user_id"
ITEM_ID = "item_id"
CATEGORY_ID = "category_id"
DAY = "day"
MEDIA_PREFIX = "media_"

P_CLICK = "p_click"
P_CART_GIVEN_CLICK = "p_cart_given_click"
P_PURCHASE_GIVEN_CLICK = "p_purchase_given_click"
CART_COUNTERFACTUAL = "cart_counterfactual"
PURCHASE_COUNTERFACTUAL = "purchase_counterfactual"
GROUND_TRUTH = (P_CLICK, P_CART_GIVEN_CLICK, P_PURCHASE_GIVEN_CLICK, CART_COUNTERFACTUAL,
                PURCHASE_COUNTERFACTUAL)

#: Merlin schema tag (a free-form string tag) on columns that only the media party holds.
MEDIA_PRIVATE_TAG = "media_private"
#: Merlin schema tag on simulator ground truth; models must never consume these columns.
GROUND_TRUTH_TAG = "ground_truth"
#: The UKD teacher's soft pCVR, added by ``models.pseudolabel``: a training signal of the
#: student, never a model input (tagged ``PSEUDO_LABEL_TAG``).
TEACHER_PCVR = "teacher_pcvr"
PSEUDO_LABEL_TAG = "pseudo_label"


def day_filename(day: int) -> str:
    """File name of one day of a canonical dataset (``day_000.parquet``, ...)."""
    return f"day_{day:03d}.parquet"


@dataclass(frozen=True)
class DatasetSpec:
    """Which column of a canonical dataset plays which role.

    Args:
        name: a short name of the source ("synthetic", "aliccp-csv", ...).
        categorical: integer id columns.
        multihot: list<int64> columns.
        continuous: float columns.
        log_continuous: the subset of ``continuous`` that is non-negative and heavy-tailed, so
            that LogOp applies before Normalize.
        targets: binary label columns in funnel order; a subset of (click, cart, purchase).
        ground_truth: simulator truth columns, never features.
        split: the column that orders the data in time.
    """

    name: str
    categorical: Tuple[str, ...]
    multihot: Tuple[str, ...] = ()
    continuous: Tuple[str, ...] = ()
    log_continuous: Tuple[str, ...] = ()
    targets: Tuple[str, ...] = (CLICK, PURCHASE)
    ground_truth: Tuple[str, ...] = ()
    split: str = DAY

    def __post_init__(self):
        for name in ("categorical", "multihot", "continuous", "log_continuous", "targets",
                     "ground_truth"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [t for t in self.targets if t not in FUNNEL]
        if unknown:
            raise ValueError(f"DatasetSpec.targets must be a subset of {FUNNEL}; got {unknown}")
        if CLICK not in self.targets or PURCHASE not in self.targets:
            raise ValueError(f"DatasetSpec.targets must hold '{CLICK}' and '{PURCHASE}'; "
                             f"got {self.targets}")
        ordered = tuple(t for t in FUNNEL if t in self.targets)
        if ordered != self.targets:
            raise ValueError(f"DatasetSpec.targets must be in funnel order {ordered}; "
                             f"got {self.targets}")
        stray = sorted(set(self.log_continuous) - set(self.continuous))
        if stray:
            raise ValueError(f"DatasetSpec.log_continuous names columns that are not "
                             f"continuous: {stray}")
        seen: dict = {}
        for role in ("categorical", "multihot", "continuous", "targets", "ground_truth"):
            for col in getattr(self, role):
                if col in seen:
                    raise ValueError(f"column '{col}' has two roles: {seen[col]} and {role}")
                seen[col] = role
        if self.split in seen:
            raise ValueError(f"split column '{self.split}' also has the role {seen[self.split]}")

    @property
    def features(self) -> List[str]:
        """Every model-input column: categorical, multi-hot and continuous."""
        return [*self.categorical, *self.multihot, *self.continuous]

    @property
    def media_private(self) -> List[str]:
        """Feature columns that only the media party holds (name starts with ``media_``)."""
        return [c for c in self.features if c.startswith(MEDIA_PREFIX)]

    @property
    def all_columns(self) -> List[str]:
        """Every column the dataset must hold, in a stable order."""
        return [*self.features, *self.targets, *self.ground_truth, self.split]

    def to_json(self) -> str:
        """Serialise to the ``dataset_spec.json`` text."""
        return json.dumps(asdict(self), indent=2)

    def save(self, directory: str) -> str:
        """Write ``dataset_spec.json`` into ``directory`` atomically; returns its path."""
        path = os.path.join(directory, SPEC_FILENAME)
        atomic_write_text(path, self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, directory: str) -> "DatasetSpec":
        """Read ``dataset_spec.json`` from ``directory``; a clear error when it is absent."""
        path = os.path.join(directory, SPEC_FILENAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path}: no dataset spec. Produce the input with `python -m "
                f"preprocessing.generate` or `python -m preprocessing.convert`, which write it.")
        with open(path) as fh:
            try:
                raw = json.load(fh)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON ({e})") from e
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(raw) - known)
        if extra:
            raise ValueError(f"{path}: unknown keys {extra}; known keys are {sorted(known)}")
        return cls(**raw)


def synthetic_spec() -> DatasetSpec:
    """The spec of the simulator's output (see ``preprocessing/simulator/``)."""
    return DatasetSpec(
        name="synthetic",
        categorical=(USER_ID, "user_age", "user_gender", "user_city_tier", "user_purchase_power",
                     ITEM_ID, CATEGORY_ID, "shop_id", "brand_id", APP_ID, "slot_id",
                     "creative_type", "hour", "media_interest_cat"),
        multihot=("user_recent_cats",),
        continuous=("item_price", "media_watch_minutes", "media_shopping_minutes",
                    "media_active_days", "media_ad_click_rate"),
        log_continuous=("item_price", "media_watch_minutes", "media_shopping_minutes"),
        targets=FUNNEL,
        ground_truth=GROUND_TRUTH,
        split=DAY,
    )
