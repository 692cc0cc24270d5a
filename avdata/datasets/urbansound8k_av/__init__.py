"""urbansound8k_av: recipe, sources and test-data generator."""
