"""The evaluation behind ``diffmf eval`` (the command: diffmf_core.tools.eval): paper metrics
(metrics.METRICS) for DIFF-MF and the classical baselines.

``evaluate_methods`` writes, for one dataset root (``diffmf eval`` defaults to the shared TNO and
DroneVehicle test sets, ``default_datasets``; DroneVehicle's white border is stripped by
``data.load_pair``), under its ``out_dir``:
``<method>.csv`` (one row per image plus a ``mean`` row), ``results.md`` (methods x metrics, best
per column in bold) and ``contact_sheet.png`` (for a few images, three rows: the whole frame, then
2x-or-more zooms of its most textured window (lettering, foliage, brick) and of its flattest window
(sky, smoke, walls: where blotches and halos would show); columns: ir | visible | each method |
|fused - visible| of diffmf, or of the first method without diffmf). ``evaluate_methods`` takes any
``{name: object with .fuse}``.

``clip_flicker`` (a folder of consecutive pairs, e.g. a video: ``diffmf eval --clip DIR``) gives the
temporal flicker of each method (``temporal_flicker``); DIFF-MF runs there as the node runs it on
video (``SteadyVideoFuser``), and frame by frame.
"""
from __future__ import annotations

import csv
import fnmatch
import io
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from diffmf_core.common.color import to_gray
from diffmf_core.common.outputs import write_bytes
from diffmf_core.common.paths import shared_data_dir
from diffmf_core.training.data import DataError, find_pairs, load_pair, write_image
from diffmf_core.training.metrics import METRICS, evaluate_pair, target_retention, warm_targets

DEFAULT_TEST_SETS = ("test/TNO", "test/DroneVehicle")
TILE_W, TILE_H, HEADER_H = 224, 176, 24


def default_datasets() -> list[Path]:
    """The shared test sets that exist on this machine."""
    root = shared_data_dir()
    return [] if root is None else [root / d for d in DEFAULT_TEST_SETS if (root / d).is_dir()]


def _tile(img: np.ndarray, label: str, interpolation: int = cv2.INTER_AREA) -> np.ndarray:
    """Letterbox ``img`` into a TILE_W x TILE_H BGR tile with a caption bar on top."""
    bgr = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img
    scale = min(TILE_W / bgr.shape[1], TILE_H / bgr.shape[0])
    w, h = max(1, round(bgr.shape[1] * scale)), max(1, round(bgr.shape[0] * scale))
    tile = np.zeros((TILE_H + HEADER_H, TILE_W, 3), np.uint8)
    y0, x0 = HEADER_H + (TILE_H - h) // 2, (TILE_W - w) // 2
    tile[y0:y0 + h, x0:x0 + w] = cv2.resize(bgr, (w, h), interpolation=interpolation)
    cv2.putText(tile, label[:30], (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def zoom_windows(gray: np.ndarray) -> dict[str, tuple[int, int, int]]:
    """Square windows (y, x, side) of ``gray`` for the contact sheet's zooms: the one with the most
    gradient energy ("texture") and the one with the least ("flat"); side = min(H, W) / 4."""
    side = max(8, min(gray.shape) // 4)
    energy = cv2.boxFilter(np.abs(cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F)), -1, (side, side),
                           normalize=True, borderType=cv2.BORDER_REFLECT)
    half = side // 2
    inner = energy[half:gray.shape[0] - side + half + 1, half:gray.shape[1] - side + half + 1]
    out = {}
    for label, index in (("texture", int(np.argmax(inner))), ("flat", int(np.argmin(inner)))):
        y, x = np.unravel_index(index, inner.shape)
        out[label] = (int(y), int(x), side)
    return out


def target_window(ir_gray: np.ndarray) -> tuple[int, int, int] | None:
    """A square window (y, x, side) around the strongest warm target of a thermal image
    (``metrics.warm_targets``), twice its extent and at least min(H, W) / 4; None without targets."""
    targets = warm_targets(ir_gray)
    if not targets:
        return None
    ys, xs = np.nonzero(targets[0][1])
    side = min(min(ir_gray.shape), max(min(ir_gray.shape) // 4, 2 * int(max(np.ptp(ys), np.ptp(xs)) + 1)))
    y = int(np.clip((ys.min() + ys.max()) // 2 - side // 2, 0, ir_gray.shape[0] - side))
    x = int(np.clip((xs.min() + xs.max()) // 2 - side // 2, 0, ir_gray.shape[1] - side))
    return y, x, side


def _contact_rows(name: str, ir: np.ndarray, vi: np.ndarray, fused: dict[str, np.ndarray], diff_method: str) -> np.ndarray:
    """Rows of the contact sheet for one pair: whole frames, then zooms on the visible image's most
    and least textured windows and on the strongest warm target (when the thermal image has one)."""
    diff = cv2.absdiff(to_gray(fused[diff_method]), to_gray(vi))
    heat = cv2.applyColorMap(cv2.convertScaleAbs(diff, alpha=2.0), cv2.COLORMAP_INFERNO)
    images = [(f"ir {name}", ir), ("visible", vi), *fused.items(), (f"|{diff_method} - vi| x2", heat)]
    rows = [np.hstack([_tile(img, label) for label, img in images])]
    windows = zoom_windows(to_gray(vi))
    warm = target_window(to_gray(ir))
    if warm is not None:
        windows["warm target"] = warm
    for where, (y, x, side) in windows.items():
        rows.append(np.hstack([_tile(img[y:y + side, x:x + side], f"{label.split()[0]} ({where} zoom)",
                                     cv2.INTER_NEAREST) for label, img in images]))
    return np.vstack(rows)


# Warm-target retention (metrics.target_retention) beside the metrics: TR, the mean over every warm
# target of the set; TR>=0.5, the share of targets that keep at least half their thermal contrast.
COLUMNS = [*METRICS, "TR", "TR>=0.5"]


def _write_csv(path: Path, rows: list[dict], mean: dict[str, float]) -> None:
    """One row per image (TR: the mean over that image's warm targets, empty without any; targets:
    their number), then the set's means (TR and TR>=0.5 over every target of the set)."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["image", *METRICS, "TR", "targets"])
    for row in rows:
        tr = "" if not row["retention"] else f"{np.mean(row['retention']):.6f}"
        writer.writerow([row["image"], *(f"{row[k]:.6f}" for k in METRICS), tr, len(row["retention"])])
    writer.writerow(["mean", *(f"{mean[k]:.6f}" for k in METRICS), f"{mean['TR']:.6f}",
                     sum(len(row["retention"]) for row in rows)])
    write_bytes(path, text.getvalue().encode())


def set_means(rows: list[dict]) -> dict[str, float]:
    """The means of one method's per-image rows: METRICS averaged over images, TR and TR>=0.5 over
    every warm target (NaN when the set has none)."""
    means = {k: float(np.mean([r[k] for r in rows])) for k in METRICS}
    kept = np.array([v for r in rows for v in r["retention"]], dtype=np.float64)
    means["TR"] = float(kept.mean()) if kept.size else float("nan")
    means["TR>=0.5"] = float((kept >= 0.5).mean()) if kept.size else float("nan")
    return means


def markdown_table(means: dict[str, dict[str, float]], title: str) -> str:
    """Methods x COLUMNS markdown table (those present), the best (highest) value of each column in
    bold."""
    columns = [k for k in COLUMNS if all(k in m for m in means.values())]
    best = {k: max(m[k] for m in means.values()) for k in columns}
    lines = [f"### {title}", "", "| Method | " + " | ".join(columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for method, m in means.items():
        cells = [f"**{m[k]:.3f}**" if m[k] == best[k] else f"{m[k]:.3f}" for k in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate_methods(dataset_root: str | Path, fusers: dict, out_dir: str | Path, limit: int | None = None,
                     contact_rows: int = 4, strip: str = "auto", sheet: list[str] | None = None
                     ) -> dict[str, dict[str, float]]:
    """Fuse every pair of ``dataset_root`` with each fuser, score with evaluate_pair and
    target_retention, write the CSVs, results.md and contact_sheet.png into ``out_dir``; returns
    {method: {column: mean}}. The contact sheet shows the pairs whose names match a glob of
    ``sheet``, or where none does, ``contact_rows`` pairs spread over the set."""
    dataset_root, out_dir = Path(dataset_root), Path(out_dir)
    pairs = find_pairs(dataset_root)[:limit]
    if not pairs or not fusers:
        raise DataError(f"{dataset_root}: nothing to evaluate ({len(pairs)} pairs, {len(fusers)} methods)")
    sheet_at = {i for i, (name, _, _) in enumerate(pairs) if any(fnmatch.fnmatchcase(name, g) for g in sheet or ())}
    if not sheet_at:
        sheet_at = set(np.linspace(0, len(pairs) - 1, min(contact_rows, len(pairs))).round().astype(int).tolist())
    diff_method = "diffmf" if "diffmf" in fusers else next(iter(fusers))
    rows: dict[str, list[dict]] = {m: [] for m in fusers}
    sheet = []
    for i, (name, ir_path, vi_path) in enumerate(tqdm(pairs, desc=f"eval {dataset_root.name}", unit="pair")):
        ir, vi = load_pair(ir_path, vi_path, strip=strip)
        ir_gray = to_gray(ir)
        targets = warm_targets(ir_gray)  # found once per pair, scored for every method
        fused_imgs = {}
        for method, fuser in fusers.items():
            fused = fuser.fuse(ir, vi)
            rows[method].append({"image": name, **evaluate_pair(fused, ir, vi),
                                 "retention": target_retention(ir_gray, to_gray(fused), targets)})
            if i in sheet_at:
                fused_imgs[method] = fused
        if i in sheet_at:
            sheet.append(_contact_rows(name, ir, vi, fused_imgs, diff_method))
    means = {m: set_means(rs) for m, rs in rows.items()}
    for method, rs in rows.items():
        _write_csv(out_dir / f"{method}.csv", rs, means[method])
    title = f"{dataset_root.name} ({len(pairs)} pairs)"
    write_bytes(out_dir / "results.md", markdown_table(means, title).encode())
    write_image(out_dir / "contact_sheet.png", np.vstack(sheet))
    return means


def temporal_flicker(fused: list[np.ndarray], ir: list[np.ndarray], vi: list[np.ndarray]) -> float:
    """Frame-to-frame change of a fused video beyond the larger source change, in grey levels:
    mean over consecutive frames and pixels of max(0, |dF| - max(|dIR|, |dVI|)) on gray u8 frames.
    0 when the fused video changes no more than its sources do."""
    if not (len(fused) == len(ir) == len(vi)) or len(fused) < 2:
        raise ValueError("temporal_flicker needs at least two frames of each, equally many")
    f, a, b = ([to_gray(x).astype(np.float32) for x in seq] for seq in (fused, ir, vi))
    excess = [np.maximum(0.0, np.abs(f[t] - f[t - 1]) - np.maximum(np.abs(a[t] - a[t - 1]), np.abs(b[t] - b[t - 1])))
              .mean() for t in range(1, len(f))]
    return float(np.mean(excess))


def _steady_video(fuser, smoothing: float):
    """``SteadyVideoFuser(fuser, smoothing)`` for a torch fuser (DIFF-MF, the warm rule), None for
    any other fuser."""
    try:
        from diffmf_core.fuser import SteadyVideoFuser, TensorFuser
    except ImportError:  # no torch: there is no torch fuser either
        return None
    return SteadyVideoFuser(fuser, smoothing) if isinstance(fuser, TensorFuser) else None


def clip_flicker(clip_root: str | Path, fusers: dict, limit: int | None = None,
                 smoothing: float = 0.95) -> dict[str, float]:
    """{method: temporal_flicker} over the consecutive pairs of ``clip_root`` (sorted by name).
    A torch fuser (DIFF-MF ``Fuser``, ``WarmRuleFuser``) runs as the node runs it on video
    (``SteadyVideoFuser`` with ``smoothing``, the node's ``video_smoothing``), and once more frame by
    frame ("<method>, frame by frame")."""
    pairs = find_pairs(clip_root)[:limit]
    frames = [load_pair(ir_path, vi_path) for _, ir_path, vi_path in pairs]
    if len(frames) < 2 or len({ir.shape for ir, _ in frames}) != 1:
        raise DataError(f"{clip_root}: a clip needs at least two frames of one size")
    irs, vis = [ir for ir, _ in frames], [vi for _, vi in frames]
    video = {}
    for m, fuser in fusers.items():
        steady = _steady_video(fuser, smoothing)
        if steady is None:
            video[m] = fuser
        else:
            video[m], video[f"{m}, frame by frame"] = steady, fuser
    return {m: temporal_flicker([fuser.fuse(ir, vi) for ir, vi in frames], irs, vis)
            for m, fuser in tqdm(video.items(), desc=f"flicker {Path(clip_root).name}", unit="method")}
