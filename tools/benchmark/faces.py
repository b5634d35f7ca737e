"""The face detector (preprocess/faces.py) on a video and on photographs: how often it finds the
face, how steady its box is, how fast it runs, for each --min_face asked for.

    python -m tools.benchmark.faces [--video V] [--min_face 0.15 0.2 0.25 0.3] [--step 1] [--repeats 3]

Video rows (default: Debian opencv-doc's Megamind.avi, one face in front in each of its four shots):
  found      frames with a face, among the frames that are not (nearly) black
  extra      faces found besides the largest, per frame (background people, or false faces)
  jitter     mean and 90th percentile of the largest face's frame-to-frame centre move, and its mean
             size change, in box sides, between consecutive frames of one shot (the raw detections
             the tracker smooths; the detector's boxes move in steps of its 8-pixel cells, so most
             moves are 0 and the others about 0.1)
  ms/frame   detection alone (resize included), the best of --repeats passes: the machine may be shared
Photograph rows: faces found and the count expected in opencv-doc's pictures with faces.
docs/face_detection.md has the comparison with the other detectors and how it was made.
"""
import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from engine.cli import HelpFormatter
from preprocess.face_crop import read_frames
from preprocess.faces import FaceDetector, centre_side

OPENCV = Path("/usr/share/doc/opencv-doc")
PHOTOS = {  # picture: (faces in it, min_face that reaches the smallest)
    "examples/data/messi5.jpg": (1, 0.1),
    "opencv4/html/facereg.jpg": (4, 0.25),
    "opencv4/html/face_swapped.jpg": (1, 0.2),
    "opencv4/html/julia_facedetect_sample.jpg": (1, 0.15),
    "examples/data/fruits.jpg": (0, 0.1),
    "examples/data/baboon.jpg": (0, 0.1),
}


def video_row(frames, min_face, repeats):
    detector = FaceDetector(min_face)
    times, found = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        found = [detector(f) for f in frames]
        times.append((time.perf_counter() - t) / len(frames))
    lit = [k for k, f in enumerate(frames) if f.mean() > 20]
    main = [centre_side(f.boxes[f.largest()])[0] if len(f) else None for f in found]
    moves, sizes = [], []
    for k in range(1, len(frames)):
        a, b = main[k - 1], main[k]
        if a is None or b is None:
            continue
        move = np.hypot(*(b[:2] - a[:2])) / b[2]
        if move < 0.5 and max(a[2], b[2]) < 1.5 * min(a[2], b[2]):  # larger ones are shot cuts
            moves.append(move)
            sizes.append(abs(b[2] - a[2]) / b[2])
    return {"min_face": min_face, "found": sum(main[k] is not None for k in lit) / len(lit),
            "extra": np.mean([max(0, len(f) - 1) for f in found]), "jitter": np.mean(moves),
            "jitter_p90": np.percentile(moves, 90), "size_jitter": np.mean(sizes), "ms": 1000 * min(times)}


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--video", default=str(OPENCV / "examples/data/Megamind.avi"), help="video to detect faces in")
    p.add_argument("--min_face", type=float, nargs="+", default=[0.15, 0.2, 0.25, 0.3],
                   help="smallest face as a fraction of the frame's short side; one row each")
    p.add_argument("--step", type=int, default=1, help="use every n-th frame of the video")
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the frames (the fastest kept)")
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    frames = list(read_frames(args.video, args.step))
    h, w = frames[0].shape[:2]
    print(f"{args.video}: {len(frames)} frames of {w}x{h}")
    print(f"{'min_face':>8} {'scale':>6} {'found':>6} {'extra':>6} {'jitter':>7} {'p90':>6} {'size':>6} {'ms/frame':>9}")
    for mf in args.min_face:
        r = video_row(frames, mf, args.repeats)
        print(f"{mf:8.2f} {FaceDetector(mf).scale(frames[0].shape):6.2f} {r['found']:6.3f} {r['extra']:6.2f} "
              f"{r['jitter']:7.3f} {r['jitter_p90']:6.3f} {r['size_jitter']:6.3f} {r['ms']:9.1f}")
    print(f"{'photograph':44} {'faces':>5} {'found':>5}")
    for name, (expected, mf) in PHOTOS.items():
        path = OPENCV / name
        if path.is_file():
            found = len(FaceDetector(mf)(np.asarray(Image.open(path).convert("RGB"))))
            print(f"{name:44} {expected:5d} {found:5d}")
        else:
            print(f"{name:44} {expected:5d}  (missing: install Debian's opencv-doc)")


if __name__ == "__main__":
    main()
