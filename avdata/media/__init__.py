"""Readers of raw media: audio (WAV), video (FLV/MP4 frames; flv: a plain FLV's packets), image (stills),
events (AEDAT, HDF5), and budget: the one rule of what a raw file may decode to, checked by every reader
from the file's header before it allocates."""
