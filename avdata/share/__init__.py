"""Sharing prepared shards: pull a shards folder, serve one over http."""
