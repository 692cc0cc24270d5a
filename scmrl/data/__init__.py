"""Shards to batches (shards are found and read through `avdata.shards`):

config      StreamConfig: what a stream delivers
stream      ShardStream: one split's samples for a (rank, worker) slot, read with retries
partition   slot_plan: which shards and samples each slot reads
decode      one adapter per kind of data (static frames + spectrogram, events); frame choice and crop
batching    collation, the training shuffle buffers (BufferedSlots, MixedBatches), make_loader
batch_ring  workers' batches handed over through reused shared-memory slots
failures    ShardReadError, ShardFailure: how a worker's read error reaches the trainer
transforms  batched augmentation and normalisation on the device
"""
