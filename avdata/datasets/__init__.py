"""One package per dataset (recipe, sources, test-data generator), and the recipe registry."""
