"""mnistdvs_ntidigits: recipe, sources and test-data generator."""
