"""MNIST-DVS and N-TIDIGITS generators, one import point for the two (synth_mnistdvs.py, synth_ntidigits.py)."""

from avdata.datasets.mnistdvs_ntidigits.synth_mnistdvs import dvs_events, make_mnistdvs_raw
from avdata.datasets.mnistdvs_ntidigits.synth_ntidigits import WORDS, cochlea_events, make_ntidigits_h5

__all__ = ["dvs_events", "make_mnistdvs_raw", "WORDS", "cochlea_events", "make_ntidigits_h5"]
