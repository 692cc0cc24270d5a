"""Readers of raw media: audio, video and event recordings."""
