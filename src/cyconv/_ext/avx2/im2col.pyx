# cyconv/_ext/im2col.pyx, built with -mavx2 -mfma (see meson.build).
include "../im2col.pyx"
