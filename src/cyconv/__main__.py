"""The ``cyconv`` command line: ``python -m cyconv info | bench | demo``.

``info``
    What this process runs on (``cyconv.info()``): paste it into every bug report.
``bench``
    The CPU benchmark against PyTorch and NumPy (:mod:`cyconv._bench`).
``demo``
    The end-to-end demo (:mod:`cyconv._demo`).

Each subcommand takes its own options (``python -m cyconv bench --help``).  The same
entry point is installed as the ``cyconv`` console script.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys

_COMMANDS = {
    "info": "print cyconv.info(): version, OpenMP, threads, BLAS, SIMD, CUDA",
    "bench": "benchmark the CPU convolutions against PyTorch and NumPy",
    "demo": "run the end-to-end demo",
}


def _usage(prog) -> str:
    lines = [f"usage: {prog} {{{','.join(_COMMANDS)}}} [options]", "",
             "commands:"]
    lines += [f"  {name:<7} {text}" for name, text in _COMMANDS.items()]
    lines += ["", f"'{prog} COMMAND --help' lists a command's options;",
              f"'{prog} --version' prints the version."]
    return "\n".join(lines)


def format_info(info: dict, indent: int = 0) -> str:
    """``cyconv.info()`` as aligned ``key: value`` lines; nested dicts and lists indented.

    >>> print(format_info({"version": "0.1.0", "cuda": {"available": False}}))
    version : 0.1.0
    cuda    :
      available : False
    """
    pad = " " * indent
    width = max((len(str(k)) for k in info), default=0)
    lines = []
    for key, value in info.items():
        head = f"{pad}{str(key):<{width}} :"
        if isinstance(value, dict) and value:
            lines.append(head)
            lines.append(format_info(value, indent + 2))
        elif isinstance(value, (list, tuple)) and value and any(
                isinstance(v, dict) for v in value):
            lines.append(head)
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    lines.append(f"{pad}  [{i}]")
                    lines.append(format_info(item, indent + 4))
                else:
                    lines.append(f"{pad}  [{i}] {item}")
        else:
            lines.append(f"{head} {value}")
    return "\n".join(lines)


def _info(argv, prog) -> int:
    ap = argparse.ArgumentParser(prog=f"{prog} info",
                                 description="Print what cyconv runs on (cyconv.info()).")
    ap.add_argument("--json", action="store_true", help="print it as JSON")
    args = ap.parse_args(argv)
    import cyconv

    info = cyconv.info()
    print(json.dumps(info, indent=2, default=str) if args.json else format_info(info))
    return 0


def _bench(argv, prog) -> int:
    from . import _bench

    return _bench.main(argv, prog=f"{prog} bench")


def _demo(argv, prog) -> int:
    try:   # imported only when asked for: it may need optional packages
        _demo = importlib.import_module("cyconv._demo")
    except ModuleNotFoundError as exc:
        if exc.name == "cyconv._demo":
            print(f"{prog} demo: this cyconv installation has no demo module",
                  file=sys.stderr)
        else:
            print(f"{prog} demo: cannot run, module {exc.name!r} is missing; the demo's "
                  f"requirements install with: pip install 'cyconv[demo]'", file=sys.stderr)
        return 1
    status = _demo.main(argv)
    return 0 if status is None else int(status)


def main(argv=None, prog=None) -> int:
    """Run one subcommand; returns its exit status.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name (default ``sys.argv[1:]``).
    prog : str, optional
        The program name shown in messages (default ``cyconv`` for the console script,
        ``python -m cyconv`` otherwise).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if prog is None:
        prog = "python -m cyconv" if sys.argv and sys.argv[0].endswith("__main__.py") \
            else "cyconv"
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage(prog), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        from . import __version__
        print(f"cyconv {__version__}")
        return 0
    command, rest = argv[0], argv[1:]
    handler = {"info": _info, "bench": _bench, "demo": _demo}.get(command)
    if handler is None:
        print(f"{prog}: error: unknown command {command!r}\n\n{_usage(prog)}",
              file=sys.stderr)
        return 2
    return handler(rest, prog)


if __name__ == "__main__":
    sys.exit(main())
