"""Dataset recipes: one small module per dataset (sources, splits, one item -> sample fields)."""
