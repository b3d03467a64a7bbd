"""UKD (Xu et al., WWW 2022): a click-adaptive teacher labels the unclicked impressions, and an
uncertainty-regularised student learns from those pseudo-labels. ``teacher.py`` holds the
teacher (a representation made click-invariant by a gradient-reversal discriminator)."""
