"""Synthetic tasks generated deterministically from the seed (no download)."""
