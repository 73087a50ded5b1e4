"""Issue 26: the output policy and the bag tools' flags, pinned where realistic single mutations
survived before, through the real CLI in this process: `diffmf bag fuse --thermal-delay-ms` on a
bag whose delay exceeds the slop; the partial folder of a run in progress survives a second run;
outputs that are symlinks are never replaced through the link. Then the survivors of the scoped
mutation run of common/outputs.py (docs/mutation.md), pinned by direct calls."""
from __future__ import annotations

import fcntl
import fnmatch
import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from diffmf_core.cli import main as cli
from diffmf_core.common import outputs as op
from diffmf_core.common.outputs import OutputError
from diffmf_core.live.sync import stamp_to_ns
from diffmf_core.tools import bag as bags
from test_output_policy import make_pairs

pytestmark = pytest.mark.timeout(120)
Q = ["--quiet"]
CLASSICAL = ["--fuser", "classical", "--quiet"]
MS = 1_000_000


def fused_infos(bag: Path) -> list:
    store = bags.make_typestore()
    with bags.open_reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == bags.INFO_TOPIC]
        return [store.deserialize_cdr(raw, bags.FUSION_INFO_TYPE) for _, _, raw in bags.iter_messages(reader, conns)]


def test_bag_fuse_thermal_delay_beyond_the_slop_pairs_each_frame_with_its_own(tmp_path, capsys):
    """Thermal stamps 60 ms after RGB at 10 Hz, slop 20 ms: without the flag nothing pairs; with
    --thermal-delay-ms 60 every thermal frame pairs with the RGB frame taken 60 ms before it (not
    with the nearer next one, 40 ms away), and the slop stays 20 ms."""
    pairs = make_pairs(tmp_path / "pairs", n=6)
    bag = tmp_path / "delayed"
    assert cli(["bag", "from-pairs", str(pairs), str(bag), "--rate", "10", "--thermal-delay-ms", "60"] + Q) == 0
    assert cli(["bag", "fuse", str(bag), str(tmp_path / "plain")] + CLASSICAL) == 2
    assert "nothing could be fused" in capsys.readouterr().err
    out = tmp_path / "fused"
    assert cli(["bag", "fuse", str(bag), str(out), "--thermal-delay-ms", "60"] + CLASSICAL) == 0
    infos = fused_infos(out)
    assert len(infos) == 6
    assert [stamp_to_ns(i.thermal_stamp) - stamp_to_ns(i.rgb_stamp) for i in infos] == [60 * MS] * 6
    assert [stamp_to_ns(i.header.stamp) for i in infos] == [stamp_to_ns(i.rgb_stamp) for i in infos]
    # --thermal-delay-ms sets the delay, not the slop: with the delay given as 35 ms (frames 25 ms
    # off their expected partner) a 30 ms slop pairs them; the default 20 ms slop does not
    capsys.readouterr()
    assert cli(["bag", "fuse", str(bag), str(tmp_path / "slop30"), "--thermal-delay-ms", "35", "--slop-ms", "30"]
               + CLASSICAL) == 0
    # (the last pair is not proven the best match before the bag ends: ApproximateTime keeps it)
    assert [stamp_to_ns(i.thermal_stamp) - stamp_to_ns(i.rgb_stamp) for i in fused_infos(tmp_path / "slop30")] \
        == [60 * MS] * 5
    assert cli(["bag", "fuse", str(bag), str(tmp_path / "slop20"), "--thermal-delay-ms", "35"] + CLASSICAL) == 2


def test_partial_folder_of_a_run_in_progress_survives_a_second_run(tmp_path, capsys):
    """A second run to the same output name removes the partial folder of a killed run, never the
    one of a run that is still alive (its process id answers)."""
    data = make_pairs(tmp_path / "data", n=2)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        running = tmp_path / ".bag.run123.partial"
        (running / "bag").mkdir(parents=True)
        (running / ".diffmf-pid").write_text(str(alive.pid))
        (running / "bag" / "part.mcap").write_bytes(b"being written")
        killed = tmp_path / ".bag.old456.partial"
        killed.mkdir()
        (killed / ".diffmf-pid").write_text(str(dead.pid))
        assert cli(["bag", "from-pairs", str(data), str(tmp_path / "bag")] + Q) == 0
        err = capsys.readouterr().err
        assert not killed.exists() and f"removed leftover partial output {killed}" in err
        assert (running / "bag" / "part.mcap").read_bytes() == b"being written"
        assert str(running) not in err
        with pytest.raises(subprocess.TimeoutExpired):  # asked whether it lives (signal 0), not signalled
            alive.wait(timeout=0.2)
    finally:
        alive.kill()
        alive.wait()


def test_symlinked_outputs_are_refused_and_their_targets_kept(tmp_path, capsys):
    """--overwrite never replaces an output that is a symlink: a bag output linked to a bag, a
    fused PNG linked to a user's file, an .onnx linked to a user's file; the links and what they
    point to stay as they were."""
    data = make_pairs(tmp_path / "data", n=2)
    real_bag = tmp_path / "real_bag"
    assert cli(["bag", "from-pairs", str(data), str(real_bag)] + Q) == 0
    before = sorted(p.name for p in real_bag.iterdir())
    link = tmp_path / "bag_link"
    link.symlink_to(real_bag, target_is_directory=True)
    capsys.readouterr()
    assert cli(["bag", "from-pairs", str(data), str(link), "--overwrite"] + Q) == 2
    assert str(link) in capsys.readouterr().err
    assert link.is_symlink() and sorted(p.name for p in real_bag.iterdir()) == before

    out = tmp_path / "out"
    assert cli(["fuse", "--data", str(data), "--out", str(out), "--method", "mean"]) == 0
    users = tmp_path / "users.png"
    users.write_bytes(b"the user's image")
    (out / "01.png").unlink()
    (out / "01.png").symlink_to(users)
    capsys.readouterr()
    assert cli(["fuse", "--data", str(data), "--out", str(out), "--method", "max", "--overwrite"]) == 2
    assert "01.png" in capsys.readouterr().err
    assert (out / "01.png").is_symlink() and users.read_bytes() == b"the user's image"

    target = tmp_path / "model.onnx"
    target.write_bytes(b"user's model")
    onnx_link = tmp_path / "link.onnx"
    onnx_link.symlink_to(target)
    with pytest.raises(OutputError, match="link.onnx is not a .onnx file this command writes; not replacing it"):
        op.check_file_output(onnx_link, overwrite=True, suffix=".onnx")
    assert onnx_link.is_symlink() and target.read_bytes() == b"user's model"


# ------------------------------------------------------------------ outputs.py: found by the scoped mutation run
# (docs/mutation.md, "common/outputs"): direct calls, no CLI, each a few milliseconds.

def own_manifest(folder: Path, command: str, names) -> None:
    (folder / f".diffmf-{command.replace(' ', '-')}").write_text(json.dumps({"files": sorted(names)}))


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_file_mode_reads_the_umask_without_changing_it_and_its_fallback(monkeypatch, mask):
    """On Linux the umask is read from /proc (os.umask is never called: it would race other threads);
    without /proc the os.umask fallback gives the same mode and restores the umask."""
    old = os.umask(mask)
    try:
        calls = []
        real_umask = os.umask
        monkeypatch.setattr(op.os, "umask", lambda m: calls.append(m) or real_umask(m))
        assert op.file_mode() == 0o666 & ~mask and calls == []
        real_read = Path.read_text
        monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: (
            (_ for _ in ()).throw(FileNotFoundError(str(self))) if str(self) == "/proc/self/status"
            else real_read(self, *a, **k)))
        assert op.file_mode() == 0o666 & ~mask and len(calls) == 2
        monkeypatch.undo()
        assert os.umask(mask) == mask  # restored
    finally:
        os.umask(old)


def test_shown_names_three_and_counts_the_rest():
    assert op._shown(["a", "b", "c"]) == "a, b, c"
    assert op._shown(["a", "b", "c", "d", "e"]) == "a, b, c and 2 more"


def test_refuse_inputs_checks_every_input_after_a_none(tmp_path):
    with pytest.raises(OutputError, match="the output is the input"):
        op.refuse_inputs(tmp_path / "x", [None, tmp_path / "x"])


def test_writable_parent_refuses_a_file_parent_and_a_read_only_folder(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("x")
    afile = tmp_path / "afile"
    with pytest.raises(OutputError, match=f"^{afile / 'sub' / 'x'}: {afile} is a file, not a folder$"):
        op.check_results(tmp_path / "afile" / "sub", ["a.png"])
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    # the tests run as root here, where os.access grants everything: answer as for a 0o555 folder
    monkeypatch.setattr(op.os, "access", lambda p, mode: (not mode & os.W_OK) if Path(p) == ro else real_access(p, mode))
    with pytest.raises(OutputError, match=f"^{ro / 'new' / 'x'}: cannot write in {ro} \\(permission denied\\)$"):
        op.check_results(ro / "new", ["a.png"])


def test_manifest_name_format_and_merge(tmp_path):
    """`.diffmf-<command>` with spaces as dashes (bags written before keep working); a second record
    adds to the first; recording nothing writes no manifest; entries whose file is gone are dropped."""
    assert op.marker_path(tmp_path, "bag fuse").name == ".diffmf-bag-fuse"
    op.record(tmp_path, "cmd", [])
    assert not op.marker_path(tmp_path, "cmd").exists()
    (tmp_path / "a").write_text("a")
    op.record(tmp_path, "cmd", ["a"])
    op.record(tmp_path, "cmd", ["b"])
    assert op.read_manifest(tmp_path, "cmd") == {"a", "b"}
    doc = json.loads(op.marker_path(tmp_path, "cmd").read_text())
    assert doc == {"written_by": "diffmf cmd", "note": "files this command wrote here; its --overwrite replaces "
                   "only these", "files": ["a", "b"]}
    assert op._prune(tmp_path, "cmd") == {"a"} and op.read_manifest(tmp_path, "cmd") == {"a"}


def test_prune_removes_an_empty_or_older_marker_and_leaves_a_folder_without_one(tmp_path):
    assert op._prune(tmp_path, "cmd") == set() and list(tmp_path.iterdir()) == []
    op.marker_path(tmp_path, "cmd").write_text("an older diffmf's plain-text marker\n")
    assert op._prune(tmp_path, "cmd") == set() and list(tmp_path.iterdir()) == []


def test_manifest_and_aside_folders_are_hidden_names_next_to_the_output(tmp_path, monkeypatch):
    """The manifest is written as a hidden temporary file in its folder and renamed (same file
    system); replace_dir moves the old output aside into a hidden `.<name>.*.old` folder next to it."""
    moves = []
    real_replace = os.replace
    monkeypatch.setattr(op.os, "replace", lambda a, b: moves.append((Path(a), Path(b))) or real_replace(a, b))
    op.record(tmp_path, "cmd", ["a"])
    (src, dst), = moves
    assert src.parent == tmp_path and fnmatch.fnmatchcase(src.name, ".diffmf-cmd.*.tmp") and dst.name == ".diffmf-cmd"
    out = tmp_path / "out"
    out.mkdir()
    new = tmp_path / "new"
    new.mkdir()
    (new / "f").write_text("new")
    moves.clear()
    op.replace_dir(new, out, is_ours=lambda p: True)
    aside = moves[0][1]
    assert moves[0][0] == out and aside.name == "out" and aside.parent.parent == tmp_path
    assert fnmatch.fnmatchcase(aside.parent.name, ".out.*.old")
    assert (out / "f").read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == [".diffmf-cmd", "out"]


def test_a_manifest_write_that_fails_leaves_no_temporary_file(tmp_path, monkeypatch):
    def fail(a, b):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(op.os, "replace", fail)
    with pytest.raises(OSError, match="No space left"):
        op.record(tmp_path, "cmd", ["a"])
    assert list(tmp_path.iterdir()) == []


def test_replace_dir_refuses_a_foreign_output_naming_where_the_new_one_is(tmp_path):
    out, new = tmp_path / "out", tmp_path / "new"
    out.mkdir()
    new.mkdir()
    with pytest.raises(OutputError, match=f"^{out} appeared while writing and is not ours; the new output is kept "
                       f"in {new}$"):
        op.replace_dir(new, out, is_ours=lambda p: False)


def test_a_removal_that_fails_does_not_fail_the_run(tmp_path, monkeypatch):
    """Leftovers that cannot be removed (a partial folder of a killed run, the old output moved
    aside) stay; the run goes on (rmtree ignores the error)."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / ".out.x1.partial"
    stale.mkdir()
    (stale / ".diffmf-pid").write_text(str(dead.pid))
    (stale / "stuck").write_text("x")
    out, new = tmp_path / "out", tmp_path / "new"
    for folder in (out, new):
        folder.mkdir()
    (out / "stuck").write_text("old")
    real_unlink = os.unlink

    def unlink(path, *a, **k):
        if Path(path).name == "stuck":
            raise PermissionError(13, "Permission denied", str(path))
        return real_unlink(path, *a, **k)

    monkeypatch.setattr(os, "unlink", unlink)
    assert op.clean_partials(out) == [f"removed leftover partial output {stale} of a killed run"]
    op.replace_dir(new, out, is_ours=lambda p: True)
    assert out.is_dir() and not new.exists()


def test_lock_folder_is_private_and_a_symlinked_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(op.tempfile, "tempdir", str(tmp_path))
    folder = op._lock_dir()
    assert folder == tmp_path / f"diffmf-locks-{os.getuid()}" and folder.stat().st_mode & 0o777 == 0o700
    folder.rmdir()
    (tmp_path / "elsewhere").mkdir()
    folder.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(OutputError, match=f"^{folder}: the lock folder is not a folder of this user; remove it$"):
        op._lock_dir()


def test_manifest_updates_wait_for_the_manifest_lock(tmp_path):
    """record and _prune (Results.finish) wait for a concurrent holder of the manifest's lock
    instead of failing."""
    (tmp_path / "a").write_text("a")
    key = hashlib.sha256(str(op._real(op.marker_path(tmp_path, "cmd"))).encode()).hexdigest()[:32]
    for update in (lambda: op.record(tmp_path, "cmd", ["a"]), lambda: op._prune(tmp_path, "cmd")):
        fd = os.open(str(op._lock_dir() / f"{key}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        release = threading.Timer(0.2, os.close, [fd])
        release.start()
        try:
            update()
        finally:
            release.join()
    assert op.read_manifest(tmp_path, "cmd") == {"a"}


def test_bag_output_messages_and_defaults(tmp_path):
    """check_bag_output refuses an existing output unless overwrite (the default is to refuse);
    names added folders with a trailing slash."""
    bag = tmp_path / "bag"
    bag.mkdir()
    (bag / "metadata.yaml").write_text("x")
    with pytest.raises(OutputError, match="exists already"):
        op.check_bag_output(bag)
    with pytest.raises(OutputError, match=f"^{bag} exists and is not a rosbag2 bag folder written by `diffmf bag` "
                       r"\(no .diffmf-bag listing its files\); --overwrite only replaces such a bag: choose another "
                       "output$"):
        op.check_bag_output(bag, overwrite=True)
    op.seal_bag(bag, "bag")
    op.check_bag_output(bag, overwrite=True)
    (bag / "extra").mkdir()
    with pytest.raises(OutputError, match=f"^{bag}: extra/ in the bag folder were not written by `diffmf bag` and "
                       "would be deleted with it; move them out or choose another output$"):
        op.check_bag_output(bag, overwrite=True)


def test_results_messages_defaults_and_files_below_a_symlinked_subfolder(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "a.png").write_text("x")
    with pytest.raises(OutputError, match=rf"^{folder}: a.png in the way: not written by `diffmf fuse` \(not listed "
                       r"in .diffmf-fuse\); --overwrite only replaces the command's own results: move them or "
                       "choose another folder$"):
        op.check_results(folder, ["a.png"], overwrite=True, command="fuse")
    op.marker_path(folder, "fuse").write_text("older plain-text marker\n")
    with pytest.raises(OutputError, match=r"not listed in .diffmf-fuse\) \(the folder's marker is an older diffmf's, "
                       r"which listed no files: remove them by hand once\); --overwrite"):
        op.check_results(folder, ["a.png"], overwrite=True, command="fuse")
    own_manifest(folder, "fuse", ["a.png"])
    with pytest.raises(OutputError, match=rf"^{folder}: 1 output file\(s\) exist already \(a.png\) "
                       r"\(use --overwrite to replace them\)$"):
        op.check_results(folder, ["a.png"], command="fuse")  # neither overwrite nor own_ok by default
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match=f"^{tmp_path / 'afile'} is a file, not a folder; choose a folder"):
        op.check_results(tmp_path / "afile", ["a.png"])
    data = tmp_path / "data"
    data.mkdir()
    (folder / "sub").symlink_to(data, target_is_directory=True)
    with pytest.raises(OutputError, match="lies inside the input"):
        op.check_results(folder, ["sub/new.png"], inputs=[data])


def test_results_folders_made_by_a_run_that_wrote_nothing_are_removed(tmp_path):
    """Nested folders the run made (and empty sub-folders in them, deepest first) are removed;
    a user's empty sub-folder in a folder that existed is kept; Results.path records its name."""
    top = tmp_path / "a"
    results = op.Results(top / "b" / "c", "cmd")
    results.record(["sub/deeper/x.png"])
    (top / "b" / "c" / "sub" / "deeper").mkdir(parents=True)
    results.finish()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "out" / "keep").mkdir(parents=True)
    results = op.Results(tmp_path / "out", "cmd")
    assert results.path("x.png") == tmp_path / "out" / "x.png"
    assert op.read_manifest(tmp_path / "out", "cmd") == {"x.png"}
    results.finish()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep"]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match=r"cannot create the output folder \(Not a directory\)$"):
        op.Results(tmp_path / "afile" / "sub", "cmd").record(["x"])


def test_file_output_rules(tmp_path):
    """check_file_output: an existing file is replaced only with overwrite, when it is a regular
    file of the suffix (any case) listed in the command's manifest; the input itself is refused."""
    f = tmp_path / "Model.ONNX"
    f.write_text("x")
    with pytest.raises(OutputError, match="exists already"):
        op.check_file_output(f, suffix=".onnx", command="export")
    with pytest.raises(OutputError, match=rf"^{f} is in the way: not written by `diffmf export` \(not listed in "
                       r"\.diffmf-export\); --overwrite only replaces the command's own files: move it or choose "
                       "another output$"):
        op.check_file_output(f, overwrite=True, suffix=".onnx", command="export")
    own_manifest(tmp_path, "export", [f.name, "cal.yaml", "notes.txt"])
    op.check_file_output(f, overwrite=True, suffix=".onnx", command="export")
    (tmp_path / "cal.yaml").write_text("x")
    op.check_file_output(tmp_path / "cal.yaml", overwrite=True, command="export")  # no suffix asked: any file
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match="notes.txt is not a .onnx file this command writes; not replacing it$"):
        op.check_file_output(tmp_path / "notes.txt", overwrite=True, suffix=".onnx", command="export")
    (tmp_path / "link").symlink_to(f)
    with pytest.raises(OutputError, match="link is not a regular file this command writes; not replacing it$"):
        op.check_file_output(tmp_path / "link", overwrite=True, command="export")
    with pytest.raises(OutputError, match=f"^{tmp_path} is a folder; give a file name for the output$"):
        op.check_file_output(tmp_path, overwrite=True)
    with pytest.raises(OutputError, match="the output is the input"):
        op.check_file_output(f, [f], overwrite=True, suffix=".onnx", command="export")


def test_partial_folder_name_owner_and_missing_parents(tmp_path):
    """partial_dir makes its parents, names the folder `.<name>.*.partial` next to the output (what
    clean_partials looks for) and writes this process's id into it."""
    out = tmp_path / "x" / "y" / "bag"
    tmp = op.partial_dir(out)
    assert tmp.parent == out.parent and fnmatch.fnmatchcase(tmp.name, ".bag.*.partial")
    assert (tmp / ".diffmf-pid").read_text() == str(os.getpid())
    assert sorted(p.name for p in out.parent.iterdir()) == [tmp.name]


def test_clean_partials_skips_files_and_unattributable_folders_and_checks_the_rest(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "bag"
    (tmp_path / ".bag.a.partial").write_text("a file, not a partial folder")
    (tmp_path / ".bag.b.partial").mkdir()  # no process id: kept, named
    for name in (".bag.c.partial", ".bag.d.partial"):
        (tmp_path / name).mkdir()
        (tmp_path / name / ".diffmf-pid").write_text(str(dead.pid))
    assert op.clean_partials(out) == [
        f"leftover partial output {tmp_path / '.bag.b.partial'} (from an interrupted run?) kept: remove it by hand",
        f"removed leftover partial output {tmp_path / '.bag.c.partial'} of a killed run",
        f"removed leftover partial output {tmp_path / '.bag.d.partial'} of a killed run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bag.a.partial", ".bag.b.partial"]
    # a process of another user (kill answers EPERM) counts as alive: its folder is kept
    (tmp_path / ".bag.e.partial").mkdir()
    (tmp_path / ".bag.e.partial" / ".diffmf-pid").write_text("1")
    monkeypatch.setattr(op.os, "kill", lambda pid, sig: (_ for _ in ()).throw(PermissionError(1, "EPERM")))
    assert op.clean_partials(out)[1:] == []
    assert (tmp_path / ".bag.e.partial").is_dir()
