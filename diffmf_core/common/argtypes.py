"""argparse value types shared by the ``diffmf`` subcommands: a bad value is refused by argparse
with one line (``diffmf X: error: argument --y: ...``, exit 2) before any work starts.

- ``int_range(lo, hi)`` / ``float_range(lo, hi, lo_open=False, hi_open=False)``: numbers in a
  range (``None`` = unbounded); floats must be finite (``nan``/``inf`` refused).
- ``parse_size``: ``640x512`` -> (width, height), both positive.
- ``examples_epilog(examples, epilog)``: a help epilog ending with an "examples:" block.
- ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether CUDA exists is checked when the
  command runs: an explicit device that is unavailable is an error there, never a fallback).
- ``path_arg``: a file or folder path, ``~`` expanded (the path checked is the path written);
  an empty path is refused (it would mean the working directory).
"""
from __future__ import annotations

import argparse
import math
import re
import textwrap
from pathlib import Path


def _num(v) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def _bounds(lo, hi, lo_open: bool, hi_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"in {'(' if lo_open else '['}{_num(lo)}, {_num(hi)}{')' if hi_open else ']'}"
    if lo is not None:
        return f"{'>' if lo_open else '>='} {_num(lo)}"
    return f"{'<' if hi_open else '<='} {_num(hi)}"


def int_range(lo: int | None = None, hi: int | None = None):
    """argparse type: an integer with lo <= value <= hi."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"must be {_bounds(lo, hi, False, False)}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False):
    """argparse type: a finite float in the range (open ends with ``lo_open``/``hi_open``)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if lo is not None and (value < lo or (lo_open and value == lo)) or \
                hi is not None and (value > hi or (hi_open and value == hi)):
            raise argparse.ArgumentTypeError(f"must be {_bounds(lo, hi, lo_open, hi_open)}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def device(text: str) -> str:
    """argparse type: auto, cpu, cuda or cuda:N."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    return text


def path_arg(text: str) -> Path:
    """argparse type: a non-empty path with ``~`` expanded."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text).expanduser()



def parse_size(text: str) -> tuple[int, int]:
    """'640x512' -> (width 640, height 512)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 640x512, got {text!r}") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def examples_epilog(examples: list[str], epilog: str | None = None) -> str | None:
    """``epilog`` (a module's own note) followed by an "examples:" block, for RawDescriptionHelpFormatter."""
    if epilog:
        epilog = "\n\n".join(textwrap.fill(par, 100) for par in epilog.split("\n\n"))
    if not examples:
        return epilog
    block = "examples:\n" + "\n".join(f"  {e}" for e in examples)
    return f"{epilog}\n\n{block}" if epilog and "examples:" not in epilog else (epilog or block)
