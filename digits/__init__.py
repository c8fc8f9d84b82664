"""Shared core of the digits system: the theta contract, the model registry and Redis key names."""
