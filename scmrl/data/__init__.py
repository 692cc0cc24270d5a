"""Shards to batches: streaming, decoding, partitioning over ranks and workers, transforms."""
