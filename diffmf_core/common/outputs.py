"""The one output policy of every ``diffmf`` command that writes files.

Contract (checked before anything is written; a violation raises ``OutputError`` with one line):

- An output is never an input, never inside an input, and never contains one
  (``refuse_inputs``); paths are compared after resolving symlinks.
- An existing output is an error that names ``--overwrite``. With ``--overwrite`` a command
  replaces only what it would itself have produced:
  * a bag output (``check_bag_output``) only when the existing path is a rosbag2 bag folder
    (a directory holding ``metadata.yaml``); any other directory or file is refused;
  * files in a results folder (``check_results``: ``diffmf fuse`` PNGs, ``bag report`` files)
    only when the folder carries the command's marker file ``.diffmf-<command>``, written by
    ``mark_results`` when the command first writes there; other files of the folder are never
    touched;
  * a single output file (``check_file_output``: ``diffmf export``) only when it is a regular
    file with the command's suffix.
- Files get the user's umask (``file_mode``; temporary files made by ``tempfile`` are 0600 and
  are chmod-ed before they are renamed into place).
- ``replace_dir(tmp, output)`` puts a finished folder in place; an existing (already checked)
  output is moved aside first and removed only after the new one is in place.
- ``clean_partials(output)`` removes hidden ``.<name>.*.partial`` folders of earlier runs whose
  process is gone (a killed run cannot clean up after itself); ``partial_dir`` makes one with
  the owning process id inside.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

MARKER_PREFIX = ".diffmf-"
PID_FILE = ".diffmf-pid"


class OutputError(Exception):
    """An output that the policy refuses; the message says why and what to do."""


def file_mode() -> int:
    """Permission bits a new regular file gets under the current umask (0o666 & ~umask)."""
    try:  # Linux: read it without changing it (os.umask would be racy across threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _real(path) -> Path:
    return Path(os.path.realpath(Path(path).expanduser()))


def refuse_inputs(output, inputs=()) -> None:
    """OutputError when ``output`` is, lies inside, or contains one of ``inputs`` (None skipped)."""
    out = _real(output)
    for item in inputs:
        if item is None:
            continue
        inp = _real(item)
        if out == inp:
            raise OutputError(f"{output}: the output is the input {item}; choose another output")
        if inp in out.parents:
            raise OutputError(f"{output}: the output lies inside the input {item}; choose an output outside it")
        if out in inp.parents:
            raise OutputError(f"{output}: the output contains the input {item}; choose another output")


def _writable_parent(path: Path) -> None:
    """OutputError when ``path``'s nearest existing parent is a file or cannot be written."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write in {parent} (permission denied)")


def is_bag_dir(path) -> bool:
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and (path / "metadata.yaml").is_file()


def check_bag_output(output, inputs=(), overwrite: bool = False) -> None:
    """Policy for a rosbag2 output folder (see the module contract)."""
    output = Path(output)
    refuse_inputs(output, inputs)
    if os.path.lexists(output):
        if not overwrite:
            raise OutputError(f"{output} exists already (use --overwrite to replace it)")
        if not is_bag_dir(output):
            raise OutputError(f"{output} exists and is not a rosbag2 bag folder (no metadata.yaml); "
                              "--overwrite only replaces a bag: choose another output")
    _writable_parent(output)


def marker_path(folder, command: str) -> Path:
    return Path(folder) / f"{MARKER_PREFIX}{command.replace(' ', '-')}"


def check_results(folder, names, inputs=(), overwrite: bool = False, command: str = "") -> None:
    """Policy for the files ``names`` a command writes into a results ``folder``."""
    folder = Path(folder)
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder; choose a folder for the outputs")
    for name in names:
        refuse_inputs(folder / name, inputs)
    existing = [n for n in names if os.path.lexists(folder / n)]
    if existing:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        if not overwrite:
            raise OutputError(f"{folder}: {len(existing)} output file(s) exist already ({shown}) "
                              "(use --overwrite to replace them)")
        if not marker_path(folder, command).is_file():
            raise OutputError(f"{folder}: {shown} exist(s) but the folder was not written by `diffmf {command}` "
                              f"(no {marker_path(folder, command).name} file); --overwrite only replaces the "
                              "command's own results: choose another folder")
        for name in existing:
            if (folder / name).is_symlink() or not (folder / name).is_file():
                raise OutputError(f"{folder / name} is not a regular file; not replacing it")
    _writable_parent(folder / "x")


def mark_results(folder, command: str) -> None:
    """Create ``folder`` (umask) and its ``.diffmf-<command>`` marker."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker = marker_path(folder, command)
        if not marker.is_file():
            marker.write_text(f"results written by `diffmf {command}`; its --overwrite may replace them\n")
    except OSError as exc:
        raise OutputError(f"{folder}: cannot create the output folder ({exc.strerror or exc})") from exc


def check_file_output(path, inputs=(), overwrite: bool = False, suffix: str = "") -> None:
    """Policy for a single output file (see the module contract)."""
    path = Path(path)
    refuse_inputs(path, inputs)
    if os.path.lexists(path):
        if path.is_dir():
            raise OutputError(f"{path} is a folder; give a file name for the output")
        if not overwrite:
            raise OutputError(f"{path} exists already (use --overwrite to replace it)")
        if path.is_symlink() or not path.is_file() or (suffix and path.suffix.lower() != suffix):
            raise OutputError(f"{path} is not a {suffix or 'regular'} file this command writes; not replacing it")
    _writable_parent(path)


def partial_dir(output) -> Path:
    """A hidden ``.<name>.XXXX.partial`` folder next to ``output`` holding this process's id.

    The folder is made under another suffix and renamed once its id file is written, so every
    ``.partial`` folder a later run finds can be attributed (a kill in between leaves no ``.partial``)."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    start = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".starting", dir=output.parent))
    (start / PID_FILE).write_text(str(os.getpid()))
    tmp = start.with_suffix(".partial")
    os.rename(start, tmp)
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_partials(output) -> list[str]:
    """Remove partial folders of ``output`` left by runs that were killed; returns messages
    (removed ones, and ones that are kept because they cannot be attributed)."""
    output = Path(output)
    notes = []
    if not output.parent.is_dir():
        return notes
    for tmp in sorted(output.parent.glob(f".{output.name}.*.partial")):
        if not tmp.is_dir() or tmp.is_symlink():
            continue
        try:
            pid = int((tmp / PID_FILE).read_text().strip())
        except (OSError, ValueError):
            notes.append(f"leftover partial output {tmp} (from an interrupted run?) kept: remove it by hand")
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(tmp, ignore_errors=True)
            notes.append(f"removed leftover partial output {tmp} of a killed run")
    return notes


def replace_dir(tmp: Path, output: Path, is_ours=is_bag_dir) -> None:
    """Move the finished folder ``tmp`` to ``output``; an existing ``output`` (which must satisfy
    ``is_ours``) is moved aside first and removed only after the new one is in place."""
    output = Path(output)
    old = None
    if os.path.lexists(output):
        if not is_ours(output):
            raise OutputError(f"{output} appeared while writing and is not ours; the new output is kept in {tmp}")
        old = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
        os.replace(output, old / output.name)
    os.replace(tmp, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
