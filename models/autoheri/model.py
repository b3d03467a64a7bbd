"""The AutoHERI network: towers along the behaviour chain with edges between their layers.

Towers click -> cart -> purchase (or click -> purchase when the data has no cart) read the
shared input layer. Hidden layer ``j`` of a downstream tower computes
``relu(W_j x_j + b_j + sum_i g_ij * P_ij h_i)``, where ``h_i`` is hidden layer ``i`` of an
upstream tower, ``P_ij`` a bias-free projection to layer ``j``'s width and ``g_ij`` the edge's
gate: the relaxed ``p_ij = sigmoid(a_ij / T)`` while searching, 1 for a kept edge of a derived
network (absent edges are not built). This equals feeding ``g_ij * h_i`` as an extra input of
layer ``j`` (the design of the project's algorithms reference, "AutoHERI"). Gradients of the
downstream losses flow into the upstream towers through the edges.

Outputs: ``pctr``; ``pcart`` (cart | click) and ``pbuy`` (purchase | cart) on the 3-stage chain,
with ``pcvr = pcart * pbuy``; ``pcvr`` directly on the 2-stage chain; ``pctcvr = pctr * pcvr``.
Loss (entire space on every stage, ESMM-style): ``CE(click, pCTR)
+ ctcart_weight * CE(click * cart, pCTR * pCART) + ctcvr_weight * CE(click * purchase,
pCTCVR)``, plus ``autoheri_sparsity * sum p_ij`` while searching.

Wei et al., "AutoHERI: Automated Hierarchical Representation Integration for Post-Click
Conversion Rate Estimation", CIKM 2021.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from models.autoheri.architecture import Edge, candidate_edges, chain_tasks
from models.autoheri.config import AutoHERIConfig
from models.baselines import CVRModel, _label, bce
from preprocessing import columns as C


class AutoHERI(CVRModel):
    """The chain of towers with a fixed set of edges (``edges``) or, with ``searchable``,
    every candidate edge behind a learnable gate.

    Args:
        features, config, targets: as for every ``CVRModel``.
        edges: the edges to build (ignored when ``searchable``: all candidates are built).
        searchable: gate each candidate edge by ``sigmoid(edge_logits / temperature)``.
    """

    def __init__(self, features, config, targets=("click", "purchase"),
                 edges: Optional[Sequence[Edge]] = None, searchable: bool = False, **kwargs):
        super().__init__(features, config, targets, **kwargs)
        self.options = config.family(AutoHERIConfig)
        self.tasks = chain_tasks(self.targets)
        self.candidates = candidate_edges(self.tasks, len(config.tower_units))
        self.searchable = searchable
        self.edges: List[Edge] = list(self.candidates if searchable else (edges or []))
        unknown = [e.name for e in self.edges if e not in self.candidates]
        if unknown:
            raise ValueError(f"edges {unknown} are not candidates of the chain "
                             f"{list(self.tasks)} with {len(config.tower_units)} layers")
        units = config.tower_units
        self.hidden = {t: [tf.keras.layers.Dense(u, name=f"{t}_tower_dense{i}")
                           for i, u in enumerate(units)] for t in self.tasks}
        self.drop = tf.keras.layers.Dropout(config.dropout) if config.dropout else None
        self.heads = {t: tf.keras.layers.Dense(1, activation="sigmoid", name=f"{t}_tower_out")
                      for t in self.tasks}
        init = "zeros" if self.options.zero_init_projections else "glorot_uniform"
        self.projections = {e.layer_name: tf.keras.layers.Dense(
            units[e.target_layer], use_bias=False, kernel_initializer=init, name=e.layer_name)
            for e in self.edges}
        self.planned_steps = 1
        self.edge_logits = None
        if searchable:
            init = float(np.log(self.options.edge_init / (1 - self.options.edge_init)))
            self.edge_logits = self.add_weight(
                name="edge_logits", shape=(len(self.edges),), trainable=True,
                initializer=tf.keras.initializers.Constant(init * self.options.temperature))
        # string keys and tuples: Keras tracks attribute containers for checkpoints
        self._incoming = {f"{t}:{j}": tuple((k, e) for k, e in enumerate(self.edges)
                                            if e.target == t and e.target_layer == j)
                          for t in self.tasks for j in range(len(units))}

    def set_planned_steps(self, steps: int) -> None:
        """The search's planned steps: the time axis of the temperature schedule."""
        self.planned_steps = max(1, int(steps))

    def temperature(self) -> tf.Tensor:
        """``T`` now: ``temperature * (temperature_final / temperature) ** progress`` with
        ``progress`` the share of the planned steps done (constant without a schedule)."""
        t0, t1 = self.options.temperature, self.options.end_temperature
        if t1 == t0 or getattr(self, "optimizer", None) is None:
            return tf.constant(t0, tf.float32)
        progress = tf.minimum(1.0, tf.cast(self.optimizer.iterations, tf.float32)
                              / float(self.planned_steps))
        return t0 * tf.pow(t1 / t0, progress)

    def edge_probabilities(self) -> tf.Tensor:
        """``p = sigmoid(a / T)`` per candidate edge (searchable models only)."""
        if self.edge_logits is None:
            raise ValueError("a derived AutoHERI network has no edge probabilities")
        return tf.sigmoid(self.edge_logits / self.temperature())

    def weight_variables(self) -> List[tf.Variable]:
        """The network weights: every trainable variable but the edge logits."""
        if self.edge_logits is None:
            return list(self.trainable_variables)
        return [v for v in self.trainable_variables if v is not self.edge_logits]

    def _towers(self, inputs, training):
        """Every tower's hidden layers and output probability."""
        x0 = self.embed(inputs)
        gates = self.edge_probabilities() if self.searchable else None
        hidden: Dict[str, List[tf.Tensor]] = {}
        probs = {}
        for t in self.tasks:
            x, layers = x0, []
            for j, dense in enumerate(self.hidden[t]):
                z = dense(x)
                for k, e in self._incoming[f"{t}:{j}"]:
                    fed = self.projections[e.layer_name](hidden[e.source][e.source_layer])
                    z = z + (gates[k] * fed if gates is not None else fed)
                x = tf.nn.relu(z)
                if self.drop is not None:
                    x = self.drop(x, training=training)
                layers.append(x)
            hidden[t] = layers
            probs[t] = tf.reshape(self.heads[t](x), [-1])
        return hidden, probs

    def hidden_layers(self, inputs) -> Dict[str, List[tf.Tensor]]:
        """Every tower's hidden layers (after the ReLU) at inference: what the edges carry
        (``benchmarks.mechanism_probe --world deep_funnel`` regresses the truth on them)."""
        return self._towers(inputs, False)[0]

    def call(self, inputs, training=False):
        _, probs = self._towers(inputs, training)
        out = {"pctr": probs[C.CLICK]}
        if C.CART in probs:
            out["pcart"], out["pbuy"] = probs[C.CART], probs[C.PURCHASE]
            out["pcvr"] = probs[C.CART] * probs[C.PURCHASE]
        else:
            out["pcvr"] = probs[C.PURCHASE]
        out["pctcvr"] = out["pctr"] * out["pcvr"]
        return out

    def output_layers(self):
        """The output unit of each tower."""
        return dict(self.heads)

    def set_prior_rates(self, rates: Dict[str, float]) -> None:
        """As ``CVRModel.set_prior_rates``, with the purchase tower of the 3-stage chain
        starting at purchase | cart = (purchase | click) / (cart | click)."""
        rates = dict(rates)
        if C.CART in self.tasks and rates.get(C.CART) and C.PURCHASE in rates:
            rates[C.PURCHASE] = rates[C.PURCHASE] / rates[C.CART]
        super().set_prior_rates(rates)

    def search_penalty(self) -> tf.Tensor:
        """``autoheri_sparsity * sum p_ij``: the expected edge count (0 for a derived net)."""
        if self.edge_logits is None or not self.options.sparsity:
            return tf.constant(0.0)
        return self.options.sparsity * tf.reduce_sum(self.edge_probabilities())

    def compute_loss(self, outputs, labels):
        click = _label(labels, C.CLICK)
        purchase = _label(labels, C.PURCHASE)
        loss = (tf.reduce_mean(bce(click, outputs["pctr"]))
                + self.config.ctcvr_weight * tf.reduce_mean(bce(click * purchase,
                                                                outputs["pctcvr"])))
        if "pcart" in outputs:
            loss += self.options.ctcart_weight * tf.reduce_mean(
                bce(click * _label(labels, C.CART), outputs["pctr"] * outputs["pcart"]))
        return loss + self.search_penalty()

    def train_step(self, data):
        """One step. A derived network: the base step. Searching: the joint step (weights by
        ``optimizer``, edge logits by ``edge_optimizer``) or, for the bi-level search, the
        weights only (the edges move in :meth:`edge_step`)."""
        if not self.searchable:
            return super().train_step(data)
        x, y = data
        weights = self.weight_variables()
        joint = self.options.search == "joint"
        variables = weights + ([self.edge_logits] if joint else [])
        with tf.GradientTape() as tape:
            outputs = self(x, training=True)
            loss = self.compute_loss(outputs, y) + tf.add_n(self.losses or [tf.constant(0.0)])
            loss = loss * self.replica_share(y)
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads[:len(weights)], weights))
        if joint:
            self.edge_optimizer.apply_gradients([(grads[-1], self.edge_logits)])
        return {"loss": loss}

    def edge_step(self, data):
        """One bi-level edge step: the loss of a held-out batch, edge logits only (the
        first-order approximation of the bi-level problem, as in DARTS)."""
        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(self(x, training=False), y)
        grad = tape.gradient(loss, self.edge_logits)
        self.edge_optimizer.apply_gradients([(grad, self.edge_logits)])
        return {"loss": loss}


#: The harness names of the AutoHERI family and what each builds.
AUTOHERI_MODELS = {
    "autoheri": "the searchable network (every candidate edge gated); models.train then "
                "derives and retrains",
    "autoheri_none": "the chain without edges: ESMM extended to cart",
    "autoheri_all": "every candidate edge on, no search",
    "autoheri_random": "autoheri_random_edges edges drawn at random (seeded by the run seed)",
}


def ablation_edges(name: str, candidates: Sequence[Edge], config, seed: int) -> List[Edge]:
    """The fixed edges of an ablation: none, all, or ``autoheri_random_edges`` random ones."""
    from models.autoheri.architecture import random_edges
    if name == "autoheri_none":
        return []
    if name == "autoheri_all":
        return list(candidates)
    if name == "autoheri_random":
        options = config.family(AutoHERIConfig)
        count = options.random_edges or (options.top_k if options.derive == "topk" else 0)
        if not count:
            raise ValueError("autoheri_random needs its edge count: set model."
                             "autoheri_random_edges to the searched set's size (or derive by "
                             "topk, whose autoheri_top_k it then uses)")
        return random_edges(candidates, count, seed)
    raise ValueError(f"{name!r} is not an AutoHERI ablation")


def build_autoheri(name: str, features, config, targets, seed: int = 0,
                   edges: Optional[Sequence[Edge]] = None) -> AutoHERI:
    """An AutoHERI-family model: ``autoheri`` is the searchable network unless ``edges``
    (a derived architecture) is given; the ablations take their edges from
    :func:`ablation_edges`."""
    if name not in AUTOHERI_MODELS:
        raise ValueError(f"{name!r} is not one of {sorted(AUTOHERI_MODELS)}")
    if name == "autoheri":
        if edges is None:
            return AutoHERI(features, config, targets, searchable=True)
        return AutoHERI(features, config, targets, edges=edges)
    candidates = candidate_edges(chain_tasks(targets), len(config.tower_units))
    return AutoHERI(features, config, targets,
                    edges=ablation_edges(name, candidates, config, seed))
