"""A dataset package outside avdata (as a fourth dataset would be): recipe + sources, nothing else."""
