# cyconv/_ext/pool.pyx, built with -mavx2 -mfma (see meson.build).
include "../pool.pyx"
