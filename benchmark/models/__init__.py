"""Frozen backbones (a registry) and the trained projection head."""
