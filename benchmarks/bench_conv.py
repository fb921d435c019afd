#!/usr/bin/env python
"""CPU benchmark of cyconv against PyTorch and NumPy (same as ``python -m cyconv bench``).

The logic lives in :mod:`cyconv._bench`, inside the package, so that an installed wheel
can run it too.  See ``benchmarks/README.md`` for the method and the options, e.g.::

    python benchmarks/bench_conv.py --quick --shapes resnet3x3_56
    python benchmarks/bench_conv.py --algorithms --out benchmarks/results/cpu.md
"""
import os
import sys

try:
    from cyconv._bench import main
except ImportError:  # run from a source checkout that is built in place, not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from cyconv._bench import main

if __name__ == "__main__":
    sys.exit(main(prog="benchmarks/bench_conv.py"))
