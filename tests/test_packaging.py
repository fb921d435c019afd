"""How cyconv is installed: the src layout, what the build installs, what it reports.

The wheel's contents are listed by hand in the ``meson.build`` files; these tests catch a
source file that was added but not listed, and the clone's root shadowing the installed
package (a fresh clone's ``python -m cyconv`` once imported the uncompiled source folder).
"""
from __future__ import annotations

import os
import pathlib
import platform
import subprocess
import sys

import pytest

import cyconv

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "cyconv"
INSTALLED = pathlib.Path(cyconv.__file__).resolve().parent
#: source files that the package needs at run time (Python, CUDA sources compiled by
#: NVRTC, and the Cython declarations and C headers for code that cimports cyconv's).
SHIPPED = (".py", ".cu", ".cuh", ".pxd", ".h")


def _shipped_files(top: pathlib.Path) -> set:
    return {str(path.relative_to(top)) for path in top.rglob("*")
            if path.suffix in SHIPPED and "__pycache__" not in path.parts}


@pytest.mark.skipif(INSTALLED == SOURCE.resolve(),
                    reason="cyconv is imported from the source tree (an editable install)")
def test_every_source_file_is_installed():
    missing = _shipped_files(SOURCE) - _shipped_files(INSTALLED)
    assert not missing, f"not installed (add them to a meson.build): {sorted(missing)}"


def test_the_clone_root_does_not_shadow_the_installed_package():
    code = ("import cyconv, cyconv._ext._runtime; "
            "print(cyconv.__file__); print(cyconv._ext.kernels('direct').__file__)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stderr
    init, kernel = res.stdout.split()
    assert pathlib.Path(init).resolve() == pathlib.Path(cyconv.__file__).resolve()
    assert kernel.endswith((".so", ".pyd"))
    assert not (ROOT / "cyconv").exists()


def test_build_info_matches_what_was_built():
    from cyconv import _build_info, _ext
    from cyconv._ext import _runtime as ext

    assert _build_info.OPENMP == ext.openmp_enabled()
    x86 = platform.machine().lower() in ("x86_64", "amd64") and os.name != "nt"
    assert _build_info.AVX2_BUILT == x86
    if _build_info.AVX2_BUILT and ext.cpu_has_avx2_fma() and \
            os.environ.get("CYCONV_ISA", "auto") in ("", "auto"):
        assert _ext.ISA == "avx2"


def test_info_names_the_loaded_openmp_runtime_and_blas():
    info = cyconv.info()
    if info["openmp"]:
        files = [lib["filepath"] for lib in info["openmp_runtime"]]
        assert files and all(os.path.exists(f) for f in files), info["openmp_runtime"]
    assert all(os.path.exists(lib["filepath"]) for lib in info["blas"]), info["blas"]
