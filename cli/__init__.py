"""Thin Typer command-line apps: they parse options and call avdata / scmrl."""
