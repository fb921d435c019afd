"""AVX2+FMA builds of the kernel modules (the shims here include ``../<mod>.pyx``)."""
