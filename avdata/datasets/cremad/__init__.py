"""cremad: recipe, sources and test-data generator."""
