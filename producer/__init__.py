"""The producer: enqueue image folders as batches, stream results back, read them from Redis."""
