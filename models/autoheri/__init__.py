"""AutoHERI (Wei et al., CIKM 2021): searched hierarchical integration along the behaviour
chain click -> cart -> purchase.

- ``architecture``: the candidate edges, derivation (threshold / top-k / random) and the JSON.
- ``model``: the chain of towers with gated (searching) or fixed (derived) edges.
- ``search``: the three stages (search, derive, retrain from scratch) behind
  ``python -m models.train --model autoheri``.
- ``plot``: ``autoheri_architecture.png``.
"""
