"""Serving many streams: the stateful interface, mnt-serve on Triton, its client, and the
exported repository's stateful model."""
