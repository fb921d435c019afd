"""Compiled kernels (Cython + OpenMP).  See cyconv._cpu for how they are chosen."""
