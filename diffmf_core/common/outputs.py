"""The one output policy of every ``diffmf`` command that writes files.

Contract (checked before anything is written; a violation raises ``OutputError`` with one line):

- An output is never an input, never inside an input, and never contains one
  (``refuse_inputs``; results folders as a whole and each file in them); paths are compared after
  resolving symlinks.
- A command replaces only what its own earlier run recorded that it wrote: the manifest
  ``.diffmf-<command>`` (JSON, ``read_manifest`` / ``record``) in the output folder lists those
  files (not "a file of a known name exists"). An existing output is an error that names
  ``--overwrite``; with it:
  * a bag output (``check_bag_output``) is replaced only when its folder holds the command's
    manifest and nothing that the manifest does not list (anything else is named as in the way);
  * files in a results folder (``check_results``: ``diffmf fuse`` PNGs, ``eval``, ``bench``,
    ``bag report``, ``train``) only when the manifest lists them; a file of an output's name that
    it does not list is in the way (refused, named); other files of the folder are never touched;
  * a single output file (``check_file_output``: ``export``, ``calib``) only when it is a regular
    file with the command's suffix listed in the manifest of its folder.
- ``Results`` (from ``results_folder``) creates the folder and its manifest only when the command
  records what it is about to write; a run that wrote nothing removes what it created, so a
  refused run leaves nothing behind.
- One run per output at a time (``output_lock``): an exclusive ``fcntl.flock`` on a lock file
  named after the resolved output path in a private folder of the temporary directory; the kernel
  releases it when the process dies, so a killed run never leaves it stuck. A second run is
  refused naming the holder's process id.
- Files get the user's umask (``file_mode``; temporary files made by ``tempfile`` are 0600 and
  are chmod-ed before they are renamed into place). ``write_bytes(path, data)`` writes a file
  that way, atomically (the tool's results, its manifests).
- ``replace_dir(tmp, output)`` puts a finished folder in place; an existing (already checked)
  output is moved aside first and removed only after the new one is in place.
- ``clean_partials(output)`` removes hidden ``.<name>.*.partial`` folders of earlier runs whose
  process is gone (a killed run cannot clean up after itself); ``partial_dir`` makes one with
  the owning process id inside.
- ``sigterm_as_interrupt()``: SIGTERM raises KeyboardInterrupt (exit 130 with one line, outputs
  cleaned up as for Ctrl-C); an interrupt that the interpreter wrapped in another error stays an
  interrupt.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` atomically (temporary file next to the target, then ``os.replace``; the
    temporary file is removed on any error or Ctrl-C); creates parent folders; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.lstrip('.')}.", suffix=".tmp", dir=path.parent)  # hidden
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, file_mode())  # mkstemp makes 0600; the file gets the user's umask
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _real(path) -> Path:
    return Path(os.path.realpath(Path(path)))


def _shown(names, n: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


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


# ------------------------------------------------------------------ manifests


def marker_path(folder, command: str) -> Path:
    """The manifest of ``command``'s files in ``folder``: ``.diffmf-<command>``."""
    return Path(folder) / f"{MARKER_PREFIX}{command.replace(' ', '-')}"


def read_manifest(folder, command: str) -> set[str]:
    """Names (relative to ``folder``) that ``command`` recorded writing there; empty when there is
    no manifest or it is not one (an older plain-text marker lists nothing)."""
    try:
        doc = json.loads(marker_path(folder, command).read_text())
        return {str(n) for n in doc["files"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def _write_manifest(folder: Path, command: str, names) -> None:
    path = marker_path(folder, command)
    if not names:
        path.unlink(missing_ok=True)
        return
    doc = {"written_by": f"diffmf {command}", "note": "files this command wrote here; its --overwrite "
           "replaces only these", "files": sorted(names)}
    write_bytes(path, (json.dumps(doc, indent=1) + "\n").encode())


def record(folder, command: str, names) -> None:
    """Add ``names`` to ``command``'s manifest in ``folder`` (which must exist); entries whose file
    is gone are dropped. Serialised with other processes by a lock on the manifest."""
    folder = Path(folder)
    with output_lock(marker_path(folder, command), wait=True):
        kept = {n for n in read_manifest(folder, command) if os.path.lexists(folder / n)}
        _write_manifest(folder, command, kept | set(names))


def _prune(folder: Path, command: str) -> set[str]:
    """Drop manifest entries whose file is gone; returns what is left."""
    with output_lock(marker_path(folder, command), wait=True):
        listed = read_manifest(folder, command)
        kept = {n for n in listed if os.path.lexists(folder / n)}
        if kept != listed or (not kept and marker_path(folder, command).exists()):
            _write_manifest(folder, command, kept)
    return kept


# ------------------------------------------------------------------ one run per output

_HELD: dict[str, list] = {}  # lock file -> [fd, depth]: re-entrant within this process


def _lock_dir() -> Path:
    folder = Path(tempfile.gettempdir()) / f"diffmf-locks-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise OutputError(f"{folder}: the lock folder is not a folder of this user; remove it")
    return folder


@contextmanager
def output_lock(output, wait: bool = False) -> Iterator[None]:
    """Hold the lock of ``output`` (see the module contract); OutputError when another process holds
    it (``wait``: block until it is free instead). Re-entrant within one process."""
    key = hashlib.sha256(str(_real(output)).encode()).hexdigest()[:32]
    path = str(_lock_dir() / f"{key}.lock")
    if path in _HELD:
        _HELD[path][1] += 1
        try:
            yield
        finally:
            _HELD[path][1] -= 1
        return
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").split()
            os.close(fd)
            raise OutputError(f"{output}: another diffmf run (process {holder[0] if holder else '?'}) is "
                              "writing this output; wait for it to finish or choose another output") from None
        try:  # the previous holder may have removed the file between our open and flock: retry
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[path] = [fd, 1]
    try:
        yield
    finally:
        del _HELD[path]
        try:
            os.unlink(path)  # still held: a waiting process re-checks the inode and retries
        except OSError:
            pass
        os.close(fd)


# ------------------------------------------------------------------ bags (one folder per output)


def is_bag_dir(path) -> bool:
    path = Path(path)
    return path.is_dir() and not path.is_symlink() and (path / "metadata.yaml").is_file()


def _tree(folder: Path) -> list[str]:
    """Every file and folder below ``folder`` (relative names, folders end with /)."""
    return sorted(str(p.relative_to(folder)) + ("/" if p.is_dir() and not p.is_symlink() else "")
                  for p in folder.rglob("*"))


def check_bag_output(output, inputs=(), overwrite: bool = False, command: str = "bag") -> None:
    """Policy for a rosbag2 output folder (see the module contract)."""
    output = Path(output)
    refuse_inputs(output, inputs)
    if os.path.lexists(output):
        if not overwrite:
            raise OutputError(f"{output} exists already (use --overwrite to replace it)")
        if not is_bag_dir(output) or not read_manifest(output, command):
            raise OutputError(f"{output} exists and is not a rosbag2 bag folder written by `diffmf {command}` "
                              f"(no {marker_path(output, command).name} listing its files); --overwrite only "
                              "replaces such a bag: choose another output")
        ours = read_manifest(output, command) | {marker_path(output, command).name}
        extra = [n for n in _tree(output) if n.rstrip("/") not in ours]
        if extra:
            raise OutputError(f"{output}: {_shown(extra)} in the bag folder were not written by `diffmf {command}` "
                              "and would be deleted with it; move them out or choose another output")
    _writable_parent(output)


def seal_bag(folder, command: str) -> None:
    """Write ``command``'s manifest into a finished bag ``folder``: every file in it."""
    folder = Path(folder)
    _write_manifest(folder, command, [n for n in _tree(folder) if not n.endswith("/")])


# ------------------------------------------------------------------ results folders


def check_results(folder, names, inputs=(), overwrite: bool = False, command: str = "",
                  own_ok: bool = False) -> None:
    """Policy for the files ``names`` a command writes into a results ``folder``. ``own_ok``: the
    command's own earlier files are replaced (or continued) without ``overwrite`` (``train``)."""
    folder = Path(folder)
    refuse_inputs(folder, inputs)
    if os.path.lexists(folder) and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder; choose a folder for the outputs")
    for name in names:
        refuse_inputs(folder / name, inputs)
    existing = [n for n in names if os.path.lexists(folder / n)]
    if existing:
        own = read_manifest(folder, command)
        foreign = [n for n in existing if n not in own]
        if foreign:
            marker = marker_path(folder, command)
            older = (" (the folder's marker is an older diffmf's, which listed no files: remove them by hand once)"
                     if marker.is_file() and not own else "")
            raise OutputError(f"{folder}: {_shown(foreign)} in the way: not written by `diffmf {command}` "
                              f"(not listed in {marker.name}){older}; --overwrite only replaces "
                              "the command's own results: move them or choose another folder")
        if not overwrite and not own_ok:
            raise OutputError(f"{folder}: {len(existing)} output file(s) exist already ({_shown(existing)}) "
                              "(use --overwrite to replace them)")
        for name in existing:
            if (folder / name).is_symlink() or not (folder / name).is_file():
                raise OutputError(f"{folder / name} is not a regular file; not replacing it")
    _writable_parent(folder / "x")


class Results:
    """A checked results folder of one command run: ``record(names)`` (or ``path(name)``) before
    writing creates the folder and lists the names in the manifest; ``finish()`` drops entries
    that were not written and removes what this run created when it wrote nothing."""

    def __init__(self, folder, command: str):
        self.folder, self.command = Path(folder), command
        self.created: list[Path] = []  # folders this run made, outermost first

    def record(self, names) -> None:
        missing = []
        parent = self.folder
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.folder}: cannot create the output folder ({exc.strerror or exc})") from exc
        self.created += reversed(missing)
        record(self.folder, self.command, names)

    def path(self, name: str) -> Path:
        self.record([name])
        return self.folder / name

    def finish(self) -> None:
        if not self.folder.is_dir():
            return
        if _prune(self.folder, self.command) or not self.created:
            return
        for folder in sorted(self.folder.rglob("*"), reverse=True):  # empty sub-folders, deepest first
            if folder.is_dir() and not folder.is_symlink():
                try:
                    folder.rmdir()
                except OSError:
                    pass
        for folder in reversed(self.created):
            try:
                folder.rmdir()
            except OSError:
                break


@contextmanager
def results_folder(folder, names, inputs=(), overwrite: bool = False, command: str = "",
                   own_ok: bool = False) -> Iterator[Results]:
    """Lock ``folder``, check it (``check_results``) and yield its ``Results``; finished on exit."""
    with output_lock(folder):
        check_results(folder, names, inputs, overwrite, command, own_ok)
        results = Results(folder, command)
        try:
            yield results
        finally:
            results.finish()


# ------------------------------------------------------------------ single files


def check_file_output(path, inputs=(), overwrite: bool = False, suffix: str = "", command: str = "") -> None:
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
        if path.name not in read_manifest(path.parent, command):
            raise OutputError(f"{path} is in the way: not written by `diffmf {command}` (not listed in "
                              f"{marker_path(path.parent, command).name}); --overwrite only replaces the "
                              "command's own files: move it or choose another output")
    _writable_parent(path)


def record_file(path, command: str) -> None:
    """List the written file ``path`` in ``command``'s manifest of its folder."""
    path = Path(path)
    record(path.parent, command, [path.name])


# ------------------------------------------------------------------ partial folders, signals


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


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so that partial outputs are cleaned up (exit 130).

    An interrupt that lands while C code is calling back into Python can surface as another error
    caused by it (CPython: ``SystemError: <function ...> returned a result with an exception set``,
    its ``__cause__`` the KeyboardInterrupt); such an error is raised again as KeyboardInterrupt."""
    def handler(signum, frame):
        raise KeyboardInterrupt

    try:
        previous, installed = signal.signal(signal.SIGTERM, handler), True
    except ValueError:  # not the main thread
        previous, installed = None, False
    try:
        yield
    except Exception as exc:
        if caused_by_interrupt(exc):
            raise KeyboardInterrupt from exc
        raise
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def caused_by_interrupt(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is in ``exc``'s chain of causes/contexts."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
