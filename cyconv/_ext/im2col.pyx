"""im2col + GEMM kernels (placeholder)."""
