"""``diffmf calib``: fit the thermal -> RGB homography from picked point pairs and write the
calibration YAML the node and ``diffmf bag fuse`` read (``diffmf_core.live.registration``)."""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np
import yaml

from diffmf_core.common.argtypes import float_range, parse_size, path_arg
from diffmf_core.live.registration import (Calibration, CalibrationError, calibration_from_dict,
                                           calibration_to_yaml, homography_from_points, reprojection_errors,
                                           save_calibration)
from diffmf_core.common.outputs import OutputError, check_file_output, output_lock, record_file


def _parse_point(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"point must be 'x,y', got {text!r}") from None
    return x, y


def read_point_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(thermal Nx2, rgb Nx2) from a CSV with rows thermal_x,thermal_y,rgb_x,rgb_y (header optional)."""
    thermal, rgb = [], []
    with open(path, newline="") as f:
        for row in csv.reader(f):
            cells = [c.strip() for c in row if c.strip()]
            if not cells or cells[0].startswith("#"):
                continue
            try:
                values = [float(c) for c in cells]
            except ValueError:
                if not thermal:  # header line
                    continue
                raise CalibrationError(f"{path}: non-numeric row {row}") from None
            if len(values) != 4:
                raise CalibrationError(f"{path}: rows need 4 numbers (thermal x,y, rgb x,y), got {row}")
            thermal.append(values[:2])
            rgb.append(values[2:])
    return np.array(thermal, dtype=np.float64).reshape(-1, 2), np.array(rgb, dtype=np.float64).reshape(-1, 2)


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Options of ``diffmf calib``."""
    p.description = ("Fit the thermal -> RGB homography from point pairs. Give points in the pixels the node "
                     "registers: undistorted pixels for a camera that publishes camera_info with distortion "
                     "(the node undistorts it first, same camera matrix), raw pixels otherwise.")
    p.add_argument("--points", metavar="CSV", type=path_arg, help="CSV rows: thermal_x,thermal_y,rgb_x,rgb_y")
    p.add_argument("--thermal-points", nargs="+", type=_parse_point, metavar="X,Y", default=[],
                   help="points in the thermal image (instead of --points), in the order of --rgb-points")
    p.add_argument("--rgb-points", nargs="+", type=_parse_point, metavar="X,Y", default=[],
                   help="the same points in the RGB image")
    p.add_argument("--thermal-size", type=parse_size, metavar="WxH", help="thermal image size")
    p.add_argument("--rgb-size", type=parse_size, metavar="WxH", help="RGB image size")
    p.add_argument("--thermal-frame-id", default="",
                   help="thermal camera frame written to the file (default: none)")
    p.add_argument("--rgb-frame-id", default="", help="RGB camera frame written to the file (default: none)")
    p.add_argument("--ransac-threshold", type=float_range(0, lo_open=True), default=3.0,
                   help="RANSAC inlier threshold in pixels (default: 3)")
    p.add_argument("-o", "--output", required=True, type=path_arg, help="calibration YAML to write (.yaml)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing calibration YAML at --output")


def main(args: argparse.Namespace) -> int:
    """Fit H from point pairs, print it with the reprojection error, write the YAML."""
    try:
        thermal, rgb = (read_point_csv(args.points) if args.points
                        else (np.array(args.thermal_points).reshape(-1, 2), np.array(args.rgb_points).reshape(-1, 2)))
        h = homography_from_points(thermal, rgb, args.ransac_threshold)
        errors = reprojection_errors(h, thermal, rgb)
        cal = Calibration(h, args.thermal_size, args.rgb_size, args.thermal_frame_id, args.rgb_frame_id,
                          round(float(np.sqrt(np.mean(errors ** 2))), 4))
        calibration_from_dict(yaml.safe_load(calibration_to_yaml(cal)))  # validates sizes too
        with output_lock(args.output):
            check_file_output(args.output, [args.points] if args.points else [], args.overwrite, ".yaml", "calib")
            save_calibration(cal, args.output)
            record_file(args.output, "calib")
    except (CalibrationError, OutputError, OSError) as exc:
        print(f"diffmf calib: {exc}", file=sys.stderr)
        return 2
    print(calibration_to_yaml(cal), end="")
    print(f"reprojection error: rms {cal.reprojection_error_px:.3f} px, max {errors.max():.3f} px "
          f"over {len(errors)} points; written to {args.output}")
    return 0
