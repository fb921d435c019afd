# cyconv/_ext/resample.pyx, built with -mavx2 -mfma (see meson.build).
include "../resample.pyx"
