# cyconv/_ext/eltwise.pyx, built with -mavx2 -mfma (see meson.build).
include "../eltwise.pyx"
