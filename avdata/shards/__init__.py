"""The shard format (what each dataset's shards hold: docs/reference.md §3):

tar        the one shard writer (deterministic members, temporary name then rename)
reader     the one shard reader (bounded, pread for members left in the file; iter_shard groups samples)
npy        the one .npy codec (encode, decode, zero-copy view; no pickles, bounded headers)
manifest   the typed manifest (Manifest, SplitEntry, ShardEntry): load, parse, save
schema     the manifest schema check (problems as JSON paths)
location   a shards folder, its URL, or .tar files: ShardsLocation, open_location, open_shards
missing    why a remote folder has no manifest.json (no bucket, repository or revision; nothing pushed there)
tar_list   manifests for shards given one by one
card       the dataset card (README.md) of a shards folder
"""
