"""Raw data to shards: the engine, its workers, resume state, parts and merge, splits."""
