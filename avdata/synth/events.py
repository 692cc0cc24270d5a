"""MNIST-DVS and N-TIDIGITS generators (kept as one import point; the code lives in mnistdvs.py and ntidigits.py)."""

from .mnistdvs import dvs_events, make_mnistdvs_raw  # noqa: F401
from .ntidigits import WORDS, cochlea_events, make_ntidigits_h5  # noqa: F401
