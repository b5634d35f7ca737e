"""Faces in video frames: detect every face, follow each one over time, smooth its box, crop it.

The detector is dlib's HOG frontal-face detector (`dlib.get_frontal_face_detector`): its model is
part of the library, so nothing is downloaded at run time, and it was chosen over OpenCV's Haar
cascades by measurement (docs/face_detection.md). It scans a fixed 80 x 80 window, so each frame is
resized to make the smallest face asked for (`min_face`, a fraction of the shorter frame side)
about that size: close-ups are detected on a small image, crowded scenes on a larger one.

- `FaceDetector()(frame)` → `Faces`: every face of an RGB frame, boxes `(x0, y0, x1, y1)` in frame
  pixels and detector scores.
- `IoUTracker`: links the faces of consecutive frames by box overlap into `Track`s that start and
  end (a face that is lost for longer than `max_gap` frames ends its track).
- `track_faces(frames)`: both over a stream of frames, keeping each track's best-scored crop so a
  person can tell the tracks apart.
- `smooth_track(raw)`: a box for every frame of a track from sparse, noisy detections;
  `track_cropper(track)` crops a track's face out of any of its frames, as inference wants it.
- `crop_frame(frame, box, size, margin)`: the square crop around a (centre x, centre y, side) box.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import cv2
import numpy as np
from scipy.ndimage import uniform_filter1d

WINDOW = 80  # side of the HOG detector's scanning window, in pixels
# The detector's box spans brows to chin, about 0.9 times the side of a Haar cascade's box: this
# margin (a fraction of the box side added on each side) frames the whole head as the DFEW-style
# crops made with a Haar box and a margin of 0.3 did.
CROP_MARGIN = 0.4


@dataclass
class Faces:
    """The faces of one frame: `boxes` (N, 4) x0, y0, x1, y1 in frame pixels, `scores` (N,)."""
    boxes: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return len(self.boxes)

    def largest(self) -> int | None:
        """Index of the largest face (ties: the higher score), None without faces."""
        if not len(self):
            return None
        area = (self.boxes[:, 2] - self.boxes[:, 0]) * (self.boxes[:, 3] - self.boxes[:, 1])
        return int(np.lexsort((self.scores, area))[-1])


def centre_side(boxes: np.ndarray) -> np.ndarray:
    """(N, 4) corner boxes → (N, 3) centre x, centre y, side (mean of width and height)."""
    boxes = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                     ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2], 1)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of `a` (N, 4) with every box of `b` (M, 4): (N, M)."""
    a, b = np.asarray(a, float).reshape(-1, 1, 4), np.asarray(b, float).reshape(1, -1, 4)
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class FaceDetector:
    """dlib's HOG face detector on RGB (or grey) uint8 frames.

    `min_face`: the smallest face to find, as a fraction of the shorter frame side; the frame is
    resized so that such a face fills the detector's window (at most `max_upscale` times up).
    `threshold`: dlib's score threshold (0 is its own default; lower finds more, and more false
    faces). The detector object is not thread-safe: use one per thread or process.
    """

    def __init__(self, min_face: float = 0.2, threshold: float = 0.0, max_upscale: float = 2.0):
        import dlib  # imported here: only detection needs it

        if not 0 < min_face <= 1:
            raise ValueError(f"min_face must be a fraction of the frame's shorter side in (0, 1], got {min_face}")
        self.min_face, self.threshold, self.max_upscale = min_face, threshold, max_upscale
        self._detect = dlib.get_frontal_face_detector()

    def scale(self, shape: Sequence[int]) -> float:
        """Resize factor of a frame of this (H, W, ...) shape before detection."""
        return min(self.max_upscale, WINDOW / (self.min_face * min(shape[:2])))

    def __call__(self, frame: np.ndarray) -> Faces:
        h, w = frame.shape[:2]
        s = self.scale(frame.shape)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        rects, scores, _ = self._detect.run(np.ascontiguousarray(small), 0, self.threshold)
        if not rects:
            return Faces(np.zeros((0, 4)), np.zeros(0))
        # dlib's rectangles are inclusive: right = left + width - 1.
        boxes = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in rects], float)
        sx, sy = size[0] / w, size[1] / h
        boxes /= np.array([sx, sy, sx, sy])
        return Faces(boxes, np.asarray(scores, float))


# -- tracking -------------------------------------------------------------------------------------

@dataclass
class Track:
    """One face over time: the frames it was detected in, with its boxes and scores there."""
    id: int
    frames: list = field(default_factory=list)
    boxes: list = field(default_factory=list)    # (4,) corner boxes
    scores: list = field(default_factory=list)
    thumbnail: np.ndarray | None = None          # the crop of its best-scored detection
    best_score: float = -np.inf
    hold: int = 0                                # frames it lasts after its last detection

    @property
    def start(self) -> int:
        return self.frames[0]

    @property
    def end(self) -> int:
        """Last frame of the track (inclusive)."""
        return self.frames[-1] + self.hold

    def __len__(self) -> int:
        return self.end - self.start + 1

    def raw(self) -> np.ndarray:
        """(len, 3) centre x, centre y, side for frames start..end; NaN where it was not detected."""
        out = np.full((len(self), 3), np.nan)
        out[np.asarray(self.frames) - self.start] = centre_side(np.array(self.boxes))
        return out

    def smoothed(self, smooth: int = 9, jump: float = 0.5) -> np.ndarray:
        """(len, 3) boxes for every frame start..end, interpolated and averaged (`smooth_track`)."""
        return smooth_track(self.raw(), smooth, jump)


class IoUTracker:
    """Greedy frame-to-frame association of face boxes by overlap.

    Each detection joins the live track whose last box overlaps it most (IoU at least `min_iou`,
    each track taking at most one detection a frame); the rest start new tracks. A track not seen
    for more than `max_gap` frames ends, so a face leaving and coming back later is a new track;
    `cut()` ends every track (a shot cut: the face now at the same place is someone else's).
    """

    def __init__(self, min_iou: float = 0.2, max_gap: int = 12):
        self.min_iou, self.max_gap = min_iou, max_gap
        self.live: list[Track] = []
        self.ended: list[Track] = []
        self._next = 0

    def cut(self) -> None:
        self.ended += self.live
        self.live = []

    def update(self, t: int, faces: Faces) -> list[Track]:
        """Add the faces of frame `t` (frames in increasing order); returns the track of each face."""
        for tr in [tr for tr in self.live if t - tr.frames[-1] > self.max_gap]:
            self.live.remove(tr)
            self.ended.append(tr)
        owner: list[Track | None] = [None] * len(faces)
        if self.live and len(faces):
            overlap = iou(np.array([tr.boxes[-1] for tr in self.live]), faces.boxes)
            while overlap.size and overlap.max() >= self.min_iou:
                i, j = np.unravel_index(np.argmax(overlap), overlap.shape)
                owner[j] = self.live[i]
                overlap[i, :] = -1
                overlap[:, j] = -1
        for j, tr in enumerate(owner):
            if tr is None:
                tr = owner[j] = Track(self._next)
                self._next += 1
                self.live.append(tr)
            tr.frames.append(t)
            tr.boxes.append(faces.boxes[j])
            tr.scores.append(float(faces.scores[j]))
        return owner

    def tracks(self, min_detections: int = 1) -> list[Track]:
        """All tracks with at least `min_detections` detections, by start frame."""
        every = self.ended + self.live
        return sorted((tr for tr in every if len(tr.frames) >= min_detections), key=lambda tr: (tr.start, tr.id))


@dataclass
class TrackConfig:
    min_face: float = 0.1        # smallest face, as a fraction of the frame's shorter side
    threshold: float = 0.0       # detector score threshold
    detect_every: int = 2        # run the detector on every n-th frame
    min_iou: float = 0.2         # overlap that links a face to a track
    max_gap: int = 12            # frames a face may go undetected without ending its track
    cut: float = 10.0            # grey-level change of most of the frame that counts as a shot cut
    min_detections: int = 3      # tracks with fewer detections are dropped as false faces
    thumb_size: int = 128        # side of each track's thumbnail


def track_faces(frames: Iterable[np.ndarray], cfg: TrackConfig | None = None,
                detector: FaceDetector | None = None) -> tuple[list[Track], int]:
    """Detect and track every face of a stream of RGB frames: (tracks by start frame, frame count).

    A shot cut (every frame is compared with the one before) ends all tracks. Tracks are numbered
    0, 1, ... in the order returned; each keeps the crop of its best-scored detection as
    `thumbnail`, and lasts up to `detect_every - 1` frames after its last detection (frames
    nobody looked at), within the video and its shot.
    """
    cfg = cfg or TrackConfig()
    detector = detector or FaceDetector(cfg.min_face, cfg.threshold)
    tracker = IoUTracker(cfg.min_iou, cfg.max_gap)
    n, before, cuts = 0, None, []
    for t, frame in enumerate(frames):
        n = t + 1
        now = _signature(frame)
        # The median over the frame: a cut changes most of it, a person walking in a small part.
        if before is not None and np.median(np.abs(now - before)) > cfg.cut:
            tracker.cut()
            cuts.append(t)
        before = now
        if t % cfg.detect_every:
            continue
        faces = detector(frame)
        for j, tr in enumerate(tracker.update(t, faces)):
            if faces.scores[j] > tr.best_score:
                tr.best_score = float(faces.scores[j])
                tr.thumbnail = crop_frame(frame, centre_side(faces.boxes[j])[0], cfg.thumb_size, CROP_MARGIN)
    tracks = tracker.tracks(cfg.min_detections)
    for k, tr in enumerate(tracks):
        tr.id = k
        stop = min([n] + [c for c in cuts if c > tr.end])
        tr.hold = min(stop - 1, tr.end + cfg.detect_every - 1) - tr.end
    return tracks, n


def _signature(frame: np.ndarray) -> np.ndarray:
    """A 32 x 32 grey thumbnail: what a shot cut changes at once and motion changes slowly."""
    grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


def track_cropper(track: Track, size: int = 224, margin: float = CROP_MARGIN, smooth: int = 5):
    """`crop(frames, indices) -> (crops (N, S, S, 3), info)`: the track's smoothed box cut out of
    frames `indices` of the video (each within the track)."""
    boxes = track.smoothed(smooth)
    detected = set(track.frames)

    def crop(frames, indices):
        rows = np.asarray(indices) - track.start
        if rows.min() < 0 or rows.max() >= len(track):
            raise ValueError(f"frames {min(indices)}-{max(indices)} are outside track {track.id} "
                             f"({track.start}-{track.end})")
        crops = np.stack([crop_frame(f, boxes[r], size, margin) for f, r in zip(frames, rows)])
        return crops, {"frames": len(rows), "detections": len(detected.intersection(map(int, indices)))}
    return crop


# -- smoothing and cropping -----------------------------------------------------------------------

def _far(a: np.ndarray, b: np.ndarray, jump: float) -> bool:
    side = min(a[2], b[2])
    return np.hypot(a[0] - b[0], a[1] - b[1]) > jump * side or max(a[2], b[2]) > 1.5 * side


def smooth_track(raw: np.ndarray, smooth: int = 9, jump: float = 0.5) -> np.ndarray | None:
    """A box for every frame from sparse, noisy detections; None if nothing was detected.

    `raw`: (n, 3) centre x, centre y, side, NaN where no face was detected. A detection far from
    the median of its neighbouring detections is dropped as a false face; a centre move of more
    than `jump` face sides starts a new segment (a shot cut, never smoothed across); frames without
    a detection are interpolated, and the boxes averaged over `smooth` frames inside each segment.
    """
    n = len(raw)
    obs = np.nonzero(~np.isnan(raw[:, 0]))[0]
    if obs.size == 0:
        return None
    keep = []
    for j, i in enumerate(obs):
        near = raw[obs[max(0, j - 3):j + 4]]
        if not _far(raw[i], np.median(near, axis=0), jump):
            keep.append(i)
    obs = np.array(keep or obs[:1])
    segs = [[obs[0]]]
    for a, b in zip(obs[:-1], obs[1:]):
        (segs.append([b]) if _far(raw[a], raw[b], jump) else segs[-1].append(b))
    out = np.empty((n, 3))
    bounds = [0] + [(s[0] + p[-1]) // 2 + 1 for p, s in zip(segs[:-1], segs[1:])] + [n]
    for seg, lo, hi in zip(segs, bounds[:-1], bounds[1:]):
        seg = np.array(seg)
        t = np.arange(lo, hi)
        track = np.stack([np.interp(t, seg, raw[seg, c]) for c in range(3)], 1)
        k = min(smooth, len(t))
        if k > 1:  # the ends repeat the first and last box (a face does not fade in from elsewhere)
            track = uniform_filter1d(track, k, axis=0, mode="nearest")
        out[lo:hi] = track
    return out


def crop_frame(frame: np.ndarray, box: Sequence[float], size: int, margin: float) -> np.ndarray:
    """The square around `box` (centre x, centre y, side) widened by `margin` sides on each side,
    resized to `size`; parts outside the frame are black, so the face keeps its place and scale."""
    cx, cy, side = box
    half = side * (1 + 2 * margin) / 2
    x0, y0 = int(round(cx - half)), int(round(cy - half))
    x1, y1 = int(round(cx + half)), int(round(cy + half))
    h, w = frame.shape[:2]
    pad = [max(0, -y0), max(0, y1 - h), max(0, -x0), max(0, x1 - w)]
    patch = frame[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
    if any(pad):
        patch = cv2.copyMakeBorder(patch, *pad, cv2.BORDER_CONSTANT, value=0)
    interp = cv2.INTER_AREA if patch.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(patch, (size, size), interpolation=interp)
