"""Hydra plugin: the sweep configs (``sweeps/``) on eif's config search path."""
