"""oCPX bidding replay: what a model's predictions do to an advertiser's cost per conversion.

The advertiser sets a target CPA; the platform bids ``pCTR x pCVR x target_CPA`` per impression
(eCPM = 1000 x that) in a second-price auction against a simulated market, and every outcome
is drawn from the simulator's true probabilities, so every bidder meets the same world and the
oracle bidder (the true probabilities) is the upper bound. Modules, one job each:

- :mod:`replay.market`: the world of one day (competing prices, drawn outcomes, arrival
  order) from a documented market model;
- :mod:`replay.auction`: the second-price auction with a budget, the pacing rule and the
  CPA / budget controller's bid multiplier;
- :mod:`replay.bidders`: the predictions a bidder bids with (a run's SavedModel,
  optionally calibrated; the served Triton ensemble; the oracle);
- :mod:`replay.outcome`: spend, wins, clicks, conversions and CPA attainment, overall and
  per media app;
- :mod:`replay.report`: JSON, markdown and plots;
- ``python -m replay``: the command (:mod:`replay.cli`).
"""
