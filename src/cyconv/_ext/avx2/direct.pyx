# cyconv/_ext/direct.pyx, built with -mavx2 -mfma (see meson.build).
include "../direct.pyx"
