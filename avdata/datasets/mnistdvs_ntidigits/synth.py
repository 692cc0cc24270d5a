"""MNIST-DVS and N-TIDIGITS generators (kept as one import point; the code lives in mnistdvs.py and ntidigits.py)."""

from avdata.datasets.mnistdvs_ntidigits.synth_mnistdvs import dvs_events, make_mnistdvs_raw  # noqa: F401
from avdata.datasets.mnistdvs_ntidigits.synth_ntidigits import WORDS, cochlea_events, make_ntidigits_h5  # noqa: F401
