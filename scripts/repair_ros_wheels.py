#!/usr/bin/env python3
"""Repair the ROS 2 PyPI wheels' CMake exports so rosidl can build messages against this Python.

The wheels' ``export_*__rosidl_generator_pyExport*.cmake`` files name the include directories
of the machine that built the wheels (``/opt/python/cpXY-cpXY/include/pythonX.Y`` and a numpy
include below it). This rewrites every such non-existent Python / numpy include directory in
``<prefix>/share/**/*.cmake`` to this interpreter's ``sysconfig`` include and
``numpy.get_include()``. Idempotent: once rewritten, the paths exist and nothing changes.

Usage: python scripts/repair_ros_wheels.py [PREFIX]   (PREFIX defaults to sys.prefix, the venv)
Prints the number of files changed.
"""
from __future__ import annotations

import os
import re
import sys
import sysconfig
from pathlib import Path

# An absolute path in a quoted, ;-separated CMake list that looks like a Python or numpy include dir.
_PY_INCLUDE = re.compile(r'(?<=[;"])/[^;"$\s]*/include/python3\.\d+t?(?=[;"])')
_NP_INCLUDE = re.compile(r'(?<=[;"])/[^;"$\s]*/numpy/(?:_core|core)/include(?=[;"])')


def repair(prefix: Path) -> int:
    import numpy  # the venv's numpy: its headers are what the generated C code compiles against

    py_inc = sysconfig.get_paths()["include"]
    np_inc = numpy.get_include()
    if not Path(py_inc, "Python.h").is_file():
        sys.exit(f"repair_ros_wheels: {py_inc}/Python.h missing (install the Python dev headers)")

    def fix(pattern: re.Pattern[str], good: str, text: str) -> str:
        return pattern.sub(lambda m: m.group(0) if os.path.isdir(m.group(0)) else good, text)

    changed = 0
    share = prefix / "share"
    for path in sorted(share.glob("*/cmake/*.cmake")):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        if "/include/python3" not in text and "/numpy/" not in text:
            continue
        new = fix(_NP_INCLUDE, np_inc, fix(_PY_INCLUDE, py_inc, text))
        if new != text:
            path.write_text(new, encoding="utf-8", errors="surrogateescape")
            changed += 1
    return changed


if __name__ == "__main__":
    print(repair(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(sys.prefix)))
