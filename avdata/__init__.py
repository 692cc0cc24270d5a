"""avdata: raw audio-visual and neuromorphic datasets in, verified WebDataset shards out."""

__version__ = "0.1.0"

