"""Viola-Jones face detection with OpenCV's Haar cascade files, without cv2.CascadeClassifier.

opencv-python 5 dropped CascadeClassifier (and its bundled XML files) from the main module, so
this module evaluates the cascade XML itself with numpy. When the installed cv2 still has
CascadeClassifier (opencv 4.x) that faster C++ path is used instead; both return the same
kind of result: a list of (x, y, w, h, neighbours) in pixel coordinates of the input image.

The XML is looked up, in order, at: the path given by the caller, $SVFAP_HAAR_CASCADE,
cv2.data.haarcascades (opencv-python 4.x), Debian's opencv-data (/usr/share/opencv4/haarcascades)
and Debian's opencv-doc (a gzipped copy under /usr/share/doc/opencv-doc). None of these needs a
download at run time.
"""
from __future__ import annotations

import gzip
import os
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

CASCADE_NAME = "haarcascade_frontalface_default.xml"


def _candidates(name: str) -> list[Path]:
    paths = []
    if os.environ.get("SVFAP_HAAR_CASCADE"):
        paths.append(Path(os.environ["SVFAP_HAAR_CASCADE"]))
    data = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if data:
        paths.append(Path(data) / name)
    for share in ("/usr/share/opencv4/haarcascades", "/usr/share/opencv/haarcascades",
                  "/usr/local/share/opencv4/haarcascades"):
        paths.append(Path(share) / name)
    paths.append(Path("/usr/share/doc/opencv-doc/opencv4/html") / (name + ".gz"))
    return paths


def find_cascade(path: str | os.PathLike | None = None, name: str = CASCADE_NAME) -> Path:
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Haar cascade file not found: {path}")
        return Path(path)
    for p in _candidates(name):
        if p.is_file():
            return p
    raise FileNotFoundError(
        f"no {name} found (looked in: {', '.join(map(str, _candidates(name)))}). Install Debian's "
        "opencv-data or opencv-doc, or point $SVFAP_HAAR_CASCADE / --cascade at the XML file")


def _read_xml(path: Path) -> ET.Element:
    raw = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    return ET.fromstring(raw)


class _Cascade:
    """A stump-based HAAR cascade in the 'opencv-cascade-classifier' XML format, as flat arrays."""

    def __init__(self, path: Path):
        root = _read_xml(path).find("cascade")
        if root is None or root.findtext("featureType", "").strip() != "HAAR":
            raise ValueError(f"{path}: not a new-format HAAR cascade")
        self.win_w = int(root.findtext("width"))
        self.win_h = int(root.findtext("height"))
        feats = []
        for f in root.find("features"):
            if (f.findtext("tilted") or "0").strip() not in ("0", ""):
                raise ValueError(f"{path}: tilted features are not supported")
            rects = [[float(v) for v in r.text.split()] for r in f.find("rects")]
            rects += [[0, 0, 0, 0, 0.0]] * (3 - len(rects))  # pad to 3 rects, zero weight
            feats.append(rects)
        feats = np.array(feats)  # (F, 3, 5): x, y, w, h, weight
        self.stages = []
        for st in root.find("stages"):
            idx, thr, left, right = [], [], [], []
            for wc in st.find("weakClassifiers"):
                nodes = wc.findtext("internalNodes").split()
                if len(nodes) != 4:
                    raise ValueError(f"{path}: only stump (depth-1) cascades are supported")
                leaves = [float(v) for v in wc.findtext("leafValues").split()]
                idx.append(int(nodes[2]))
                thr.append(float(nodes[3]))
                left.append(leaves[0])
                right.append(leaves[1])
            self.stages.append((float(st.findtext("stageThreshold")), feats[idx],
                                np.array(thr), np.array(left), np.array(right)))

    @lru_cache(maxsize=8)
    def offsets(self, stride: int):
        """Per stage: corner offsets into a flat integral image with this row stride.

        Most features have two rectangles; the third is gathered only for those that use it.
        """
        out = []
        for sthr, rects, thr, left, right in self.stages:
            x, y, w, h = (rects[..., i].astype(np.int64) for i in range(4))
            corners = np.stack([y * stride + x, y * stride + x + w,
                                (y + h) * stride + x, (y + h) * stride + x + w], axis=-1)
            three = np.nonzero(rects[:, 2, 4] != 0)[0]
            out.append((sthr, corners[:, :2], rects[:, :2, 4].astype(np.float32),
                        three, corners[three, 2], rects[three, 2, 4].astype(np.float32),
                        thr.astype(np.float32), left.astype(np.float32), right.astype(np.float32)))
        return out


@lru_cache(maxsize=4)
def _load(path: str):
    if hasattr(cv2, "CascadeClassifier"):
        return cv2.CascadeClassifier(path if not path.endswith(".gz") else _ungzip(path))
    return _Cascade(Path(path))


def _ungzip(path: str) -> str:
    import tempfile
    dst = Path(tempfile.gettempdir()) / Path(path).name[:-3]
    if not dst.exists():
        dst.write_bytes(gzip.open(path).read())
    return str(dst)


def detect_faces(gray: np.ndarray, scale_factor: float = 1.15, min_neighbors: int = 4,
                 min_size: int = 30, cascade: str | os.PathLike | None = None):
    """Faces in a uint8 grayscale image: list of (x, y, w, h, neighbours), largest groups first."""
    model = _load(str(find_cascade(cascade)))
    if not isinstance(model, _Cascade):
        rects, _, weights = model.detectMultiScale3(gray, scale_factor, min_neighbors,
                                                    minSize=(min_size, min_size),
                                                    outputRejectLevels=True)
        return [(int(x), int(y), int(w), int(h), float(s)) for (x, y, w, h), s in zip(rects, weights)]
    raw = _scan(model, gray, scale_factor, min_size)
    return _group(raw, min_neighbors)


def _scan(c: _Cascade, gray: np.ndarray, scale_factor: float, min_size: int) -> np.ndarray:
    """All windows accepted by every stage, over an image pyramid, as (N, 4) x, y, w, h."""
    H, W = gray.shape
    levels = []
    factor = 1.0
    while True:
        w, h = int(round(W / factor)), int(round(H / factor))
        if w < c.win_w + 1 or h < c.win_h + 1:
            break
        if c.win_w * factor >= min_size:
            levels.append((factor, w, h))
        factor *= scale_factor
    if not levels:
        return np.zeros((0, 4))
    # All pyramid levels share one flat integral image with a common row stride, so a feature's
    # corner offsets are the same at every level and each stage is one gather for all windows.
    stride = levels[0][1] + 1
    blocks, sq_blocks, bases, boxes = [], [], [], []
    row0 = 0
    for factor, w, h in levels:
        img = gray if factor == 1.0 else cv2.resize(gray, (w, h), interpolation=cv2.INTER_LINEAR)
        img = img.astype(np.float64)
        # int32 holds the sum of up to 8.4M pixels exactly (far more than a detection frame).
        ii = np.zeros((h + 1, stride), np.int32)
        sq = np.zeros((h + 1, stride))
        ii[1:, 1:w + 1] = img.cumsum(0).cumsum(1)
        sq[1:, 1:w + 1] = (img * img).cumsum(0).cumsum(1)
        step = 1 if factor > 2 else 2  # OpenCV's rule: finer steps once the image is strongly shrunk
        ys, xs = np.mgrid[0:h - c.win_h:step, 0:w - c.win_w:step]
        ys, xs = ys.ravel(), xs.ravel()
        bases.append((row0 + ys) * stride + xs)
        boxes.append(np.stack([xs * factor, ys * factor,
                               np.full(xs.shape, c.win_w * factor),
                               np.full(xs.shape, c.win_h * factor)], 1))
        blocks.append(ii)
        sq_blocks.append(sq)
        row0 += h + 1
    flat, flat_sq = np.concatenate(blocks).ravel(), np.concatenate(sq_blocks).ravel()
    base = np.concatenate(bases)
    box = np.concatenate(boxes)

    # Variance normalisation over the window less a 1-pixel border, as the cascade was trained.
    nw, nh = c.win_w - 2, c.win_h - 2
    n_off = np.array([stride + 1, stride + 1 + nw, (nh + 1) * stride + 1, (nh + 1) * stride + 1 + nw])
    area = nw * nh

    def rect_sum(arr, b, off):
        v = arr[b[:, None] + off]
        return v[..., 0] - v[..., 1] - v[..., 2] + v[..., 3]

    s = rect_sum(flat, base, n_off).astype(np.float64)
    s2 = rect_sum(flat_sq, base, n_off)
    nf = area * s2 - s * s
    inv_nf = np.where(nf > 0, 1.0 / np.sqrt(np.maximum(nf, 1e-12)), 1.0)

    inv_nf = inv_nf.astype(np.float32)
    for sthr, corners, weight, three, corners3, weight3, thr, left, right in c.offsets(stride):
        if base.size == 0:
            break
        v = flat[base[:, None, None, None] + corners]  # (N, K, 2, 4)
        sums = (v[..., 0] - v[..., 1] - v[..., 2] + v[..., 3]).astype(np.float32)
        val = (sums * weight).sum(-1)
        if three.size:
            v3 = flat[base[:, None, None] + corners3]  # (N, K3, 4)
            val[:, three] += (v3[..., 0] - v3[..., 1] - v3[..., 2] + v3[..., 3]) * weight3
        val *= inv_nf[:, None]
        score = np.where(val < thr, left, right).sum(1)
        keep = score >= sthr
        base, box, inv_nf = base[keep], box[keep], inv_nf[keep]
    return box


def _group(raw: np.ndarray, min_neighbors: int, eps: float = 0.2):
    """Cluster overlapping hits (OpenCV's similarity rule) and keep well-supported clusters."""
    n = len(raw)
    if n == 0:
        return []
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    x, y, w, h = raw.T
    for i in range(n):
        delta = eps * (np.minimum(w[i], w) + np.minimum(h[i], h)) * 0.5
        sim = ((np.abs(x - x[i]) <= delta) & (np.abs(y - y[i]) <= delta)
               & (np.abs(x + w - x[i] - w[i]) <= delta) & (np.abs(y + h - y[i] - h[i]) <= delta))
        for j in np.nonzero(sim[:i])[0]:
            parent[find(j)] = find(i)
    roots = np.array([find(i) for i in range(n)])
    out = []
    for r in np.unique(roots):
        members = raw[roots == r]
        if len(members) > min_neighbors:
            mx, my, mw, mh = members.mean(0)
            out.append((int(round(mx)), int(round(my)), int(round(mw)), int(round(mh)), float(len(members))))
    out.sort(key=lambda r: -r[4])
    return out
