# cyconv/_ext/blocked.pyx, built with -mavx2 -mfma (see meson.build).
include "../blocked.pyx"
