# cyconv/_ext/norm.pyx, built with -mavx2 -mfma (see meson.build).
include "../norm.pyx"
