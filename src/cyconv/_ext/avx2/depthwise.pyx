# cyconv/_ext/depthwise.pyx, built with -mavx2 -mfma (see meson.build).
include "../depthwise.pyx"
