"""The bottom layer of extcvr: helpers every package may import and that import no package of
ours (``.importlinter``): summary tables (``tables``), atomic outputs (``atomic``), the one
error shape of configuration checks (``params``), machine facts (``machine``) and the console's
known-noise filters (``quiet``)."""
