# cyconv/_ext/winograd.pyx, built with -mavx2 -mfma (see meson.build).
include "../winograd.pyx"
