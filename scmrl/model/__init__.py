"""The S-CMRL network and its baselines: neurons, embeddings, attention, fusion, loss."""
