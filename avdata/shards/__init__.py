"""The shard format: tar reader and writer, manifest, dataset card, shards locations."""
