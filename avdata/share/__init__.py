"""Sharing prepared shards: pull a shards folder, serve one over http, push one to object storage."""
