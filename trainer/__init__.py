"""Trains the one-hidden-layer MLP with TensorFlow and publishes theta CSV versions."""
