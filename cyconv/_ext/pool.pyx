"""Pooling, padding and element-wise kernels (to be filled in)."""
