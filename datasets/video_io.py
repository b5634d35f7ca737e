"""Frame sources: video files (PyAV, or decord with PyAV as its fallback) and folders of frames.

PyAV is the default: both backends return the same frames (FFmpeg's decoder and
converter underneath), but PyAV lets the decoder drop the non-reference frames a
clip does not use, about half of an x264 stream, where decord decodes every frame
from the keyframe on (docs/speed.md has the numbers). decord stays selectable
(`backend="decord"`, the release's reader, imported only then) and falls back to
PyAV wherever it fails.

A source is opened for one sample access and closed right after: decoders hold
native state that must never be shared across DataLoader worker processes.
Only the frames a clip needs are converted to RGB, and decoding stops after the
last of them; in containers with reliable timestamps, gaps are skipped by
seeking to the nearest preceding keyframe.

AVI always goes through PyAV, decoded sequentially. AVI has no real
presentation timestamps, and on B-frame streams such as the opencv-doc
`Megamind.avi` decord's seeking (`get_batch`, `skip_frames`, `seek_accurate`)
returns the wrong frames (its frame 100 is frame 2). Frame counts come from the demuxed packets,
never from the container header (`tree.avi` claims 444 frames and holds 68).

Frames come upright: a video whose display matrix says to rotate it (a phone held upright
records landscape frames with a 90 degree rotation) is turned as a player would turn it, by the
multiple of 90 degrees nearest to the matrix's rotation (PyAV's ``VideoFrame.rotation``), as
decord does by itself. Flips in the matrix are not applied.

Frame images are read with Pillow, not OpenCV: decord's wheel loads an old
zlib into the process, and once decord is imported before cv2, OpenCV's PNG
reader fails on every file ("libpng error: bad parameters to zlib").
"""
from __future__ import annotations

import bisect
import collections
import os
import re
from fractions import Fraction

import numpy as np
from PIL import Image

import av
from av.video.reformatter import VideoReformatter

FRAME_EXTS = (".jpg", ".jpeg", ".png")
VIDEO_EXTS = (".mp4", ".avi", ".flv", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
BACKENDS = ("pyav", "decord")
DEFAULT_BACKEND = "pyav"


class VideoReadError(RuntimeError):
    """A sample that cannot be read; the message names the path and the reason."""
    user_error = True  # the command line prints one error line (engine/cli.py)


def natural_key(name) -> list:
    """Sort key that puts `img_2` before `img_10` (and ignores case)."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", str(name))]


def list_frame_files(folder: str) -> list[str]:
    names = [n for n in os.listdir(folder) if n.lower().endswith(FRAME_EXTS)]
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


def is_frame_folder(path: str) -> bool:
    """A folder of frame images and no videos (a folder that holds videos is a folder of videos,
    whatever images lie beside them)."""
    if not os.path.isdir(path):
        return False
    names = [n.lower() for n in os.listdir(path)]
    return any(n.endswith(FRAME_EXTS) for n in names) and not any(n.endswith(VIDEO_EXTS) for n in names)


def find_inputs(paths, warn=None) -> list[str]:
    """Videos from files, frame folders, and folders of videos or frame folders (searched
    recursively, in natural order); a path that is none of these is a VideoReadError. Images lying
    beside videos are not a video: they are left out, and ``warn`` (a callable) is told."""
    found = []
    for path in map(os.fspath, paths):
        if os.path.isfile(path) or is_frame_folder(path):
            found.append(path)
        elif os.path.isdir(path):
            inside = []
            for root, dirs, files in os.walk(path):
                dirs.sort(key=natural_key)
                if root != path and is_frame_folder(root):
                    inside.append(root)
                    dirs[:] = []  # a frame folder is one video, whatever it holds below
                    continue
                inside += [os.path.join(root, n) for n in sorted(files, key=natural_key)
                           if n.lower().endswith(VIDEO_EXTS)]
                loose = [n for n in files if n.lower().endswith(FRAME_EXTS)]
                if loose and warn is not None:
                    warn(f"{len(loose)} image(s) in {root} ({', '.join(sorted(loose, key=natural_key)[:3])}"
                         f"{', ...' if len(loose) > 3 else ''}) lie beside videos: not a video, left out (the frames "
                         f"of one video go in a folder of their own)")
            if not inside:
                raise VideoReadError(f"{path}: no videos ({', '.join(VIDEO_EXTS)}) or frame folders inside")
            found += inside
        else:
            raise VideoReadError(f"no such video, frame folder or folder: {path}")
    return found


def _is_avi(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] == b"RIFF" and head[8:11] == b"AVI"


class FrameFolder:
    def __init__(self, path: str):
        self.path = path
        self.files = list_frame_files(path)
        if not self.files:
            raise VideoReadError(f"{path}: folder holds no {'/'.join(FRAME_EXTS)} frames")
        self.num_frames = len(self.files)

    def get(self, indices) -> np.ndarray:
        frames = []
        for i in indices:
            try:
                with Image.open(self.files[i]) as img:
                    frames.append(np.asarray(img.convert("RGB")))
            except Exception as e:  # Pillow raises several types for broken files
                raise VideoReadError(f"{self.files[i]}: unreadable image ({e})") from e
        if len({f.shape for f in frames}) > 1:
            raise VideoReadError(f"{self.path}: frames differ in size")
        return np.stack(frames)

    def close(self):
        pass


class DecordVideo:
    def __init__(self, path: str):
        self.path = path
        import decord  # only when chosen: its wheel's zlib breaks OpenCV's PNG codec (see above)
        self._vr = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
        self.num_frames = len(self._vr)
        if self.num_frames == 0:
            raise VideoReadError(f"{path}: no video frames")

    def get(self, indices) -> np.ndarray:
        wanted = sorted(set(indices))
        batch = self._vr.get_batch(wanted).asnumpy()
        where = {t: k for k, t in enumerate(wanted)}
        return batch[[where[i] for i in indices]]

    def close(self):
        self._vr = None  # closing twice (after a failed read, then in `finally`) is harmless


class _Untrusted(Exception):
    """Decoded timestamps do not match the packet index: decode sequentially."""


class PyAVVideo:
    def __init__(self, path: str, lookback: int = 0):
        self.path = path
        # Decoded frames kept behind a sequential decode's position, for a reader used chunk after
        # chunk whose windows overlap (tools.predict): they are converted when asked for, not decoded again.
        self.lookback = lookback
        self._behind = collections.deque(maxlen=lookback or None)
        self._container = av.open(path)
        try:
            self._sequential = self._container.format.name.startswith("avi")
            self._stream = self._container.streams.video[0]
            pts, keys = [], []
            for packet in self._container.demux(self._stream):
                if packet.size:     # empty packets are padding, not frames (tree.avi)
                    pts.append(packet.pts)
                    if packet.is_keyframe:
                        keys.append(packet.pts)
            self.num_frames = len(pts)
            if self.num_frames == 0:
                raise VideoReadError(f"{path}: no video frames")
            if None in pts or len(set(pts)) != len(pts):
                # Missing or repeated timestamps: only decode order is meaningful.
                self._sequential, pts, keys = True, list(range(len(pts))), []
            self._pts = sorted(pts)
            self._index_of = {p: i for i, p in enumerate(self._pts)}
            self._key_idx = sorted(self._index_of[p] for p in keys) or [0]
        except BaseException:
            self._container.close()
            raise
        self._stream.codec_context.thread_count = 1
        self._stream_iter = None
        self._seq_next = None  # the index of the next frame of a sequential decode, while one is open
        # One converter per reader: a frame's own to_ndarray(format=...) rebuilds
        # the swscale context for every frame, which dominates on small frames (docs/speed.md).
        self._rgb = VideoReformatter()
        self.decoded = 0    # frames decoded so far: what seeking saves is visible here

    def _to_rgb(self, frame) -> np.ndarray:
        # One swscale thread: PyAV's default (0, automatic) starts a thread pool in every
        # converter, slow to start, more threads than the one a DataLoader worker should use,
        # and a converter carried across a fork would wait forever on its parent's threads.
        return upright(frame, self._rgb.reformat(frame, format="rgb24", threads=1).to_ndarray())

    def _restart(self, seek_pts=None, want_pts=frozenset()):
        """Decode from the keyframe at `seek_pts` (frames other than `want_pts` may be
        skipped), or every frame from the very start (reopened: AVI seeking cannot be trusted)."""
        self._end_iter()
        self._seq_next = 0 if seek_pts is None else None
        self._behind.clear()
        if seek_pts is None:
            self._container.close()
            self._container = av.open(self.path)
            self._stream = self._container.streams.video[0]
            self._stream.codec_context.thread_count = 1
        else:
            self._container.seek(seek_pts, stream=self._stream, backward=True)
        self._stream_iter = (self._container.decode(self._stream) if seek_pts is None
                             else self._decode_only(want_pts))

    def _decode_only(self, want_pts: set):
        """Frames from the current position, except those neither wanted nor referenced by
        another frame (x264's non-reference B-frames, about half of a stream): the decoder
        drops their packets unread. Set per packet, so every wanted frame is decoded."""
        ctx = self._stream.codec_context
        for packet in self._container.demux(self._stream):
            ctx.skip_frame = "DEFAULT" if packet.pts is None or packet.pts in want_pts else "NONREF"
            yield from ctx.decode(packet)

    def _get_sequential(self, wanted: set):
        # Later frames of a reader used again (a long video read in chunks) continue the decode
        # where the last call stopped, and the `lookback` frames behind it are at hand: each
        # frame is decoded once, not once per chunk.
        kept = dict(self._behind) if self._behind.maxlen else {}
        got = {i: self._to_rgb(kept[i]) for i in wanted if i in kept}
        rest = wanted - got.keys()
        if not rest:
            return got
        if self._stream_iter is None or self._seq_next is None or self._seq_next > min(rest):
            self._restart()
        last = max(rest)
        for frame in self._stream_iter:
            pos = self._seq_next
            self._seq_next += 1
            self.decoded += 1
            if self._behind.maxlen:
                self._behind.append((pos, frame))
            if pos in rest:
                got[pos] = self._to_rgb(frame)
            if pos >= last:
                break
        return got

    def _get_seeking(self, wanted: list):
        want_set, got, pos = set(wanted), {}, None
        want_pts = {self._pts[i] for i in wanted}
        for t in wanted:
            if t in got:
                continue
            key = self._key_idx[max(bisect.bisect_right(self._key_idx, t) - 1, 0)]
            if pos is None or pos < key - 1 or pos >= t:
                self._restart(self._pts[key], want_pts)
            for frame in self._stream_iter:
                self.decoded += 1
                pos = self._index_of.get(frame.pts)
                if pos is None:
                    raise _Untrusted
                if pos in want_set:
                    got[pos] = self._to_rgb(frame)
                if pos >= t:
                    break
        return got

    def get(self, indices) -> np.ndarray:
        wanted = sorted(set(indices))
        want_set = set(wanted)
        got = {}
        if not self._sequential:
            try:
                got = self._get_seeking(wanted)
            except _Untrusted:
                got = {}
        if not want_set <= got.keys():
            got = self._get_sequential(want_set)
        missing = want_set - got.keys()
        if missing:
            raise VideoReadError(f"{self.path}: frames {sorted(missing)[:5]} of "
                                 f"{self.num_frames} could not be decoded (truncated?)")
        return np.stack([got[i] for i in indices])

    def _end_iter(self):
        # Finish a suspended decode generator now, while its container is open, rather than
        # whenever the garbage collector reaches it.
        if self._stream_iter is not None:
            self._stream_iter.close()
            self._stream_iter = None

    def close(self):
        self._end_iter()
        self._container.close()


def quarter_turns(degrees) -> int:
    """Counter-clockwise quarter turns nearest to a rotation in degrees."""
    return int(round((degrees or 0) / 90)) % 4


def upright(frame, array: np.ndarray) -> np.ndarray:
    """``array`` (the decoded ``frame``) turned as its display matrix says."""
    turns = quarter_turns(frame.rotation)
    return np.ascontiguousarray(np.rot90(array, k=turns)) if turns else array


def video_rotation(path: str) -> int:
    """The display matrix's counter-clockwise rotation of a video file in degrees (0 without one)."""
    try:
        with av.open(path) as c:
            stream = c.streams.video[0]
            for frame in c.decode(stream):
                return int(frame.rotation or 0)
    except (av.FFmpegError, IndexError, OSError):
        pass
    return 0


def _has_decord() -> bool:
    import importlib.util
    return importlib.util.find_spec("decord") is not None


def open_source(path: str, backend: str = DEFAULT_BACKEND, lookback: int = 0):
    """Open a frame folder or a video file; decord, when chosen, falls back to PyAV on failure.
    ``lookback``: frames PyAV keeps behind its position (see :class:`PyAVVideo`)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    if os.path.isdir(path):
        return FrameFolder(path)
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: missing")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"{path}: empty file (0 bytes)")
    errors = []
    if backend == "decord" and _has_decord() and not _is_avi(path):
        try:
            return DecordVideo(path)
        except Exception as e:  # decord raises bare RuntimeErrors for any bad input
            errors.append(f"decord: {e}")
    try:
        return PyAVVideo(path, lookback)
    except Exception as e:
        errors.append(f"pyav: {e}")
    raise VideoReadError(f"{path}: cannot open video ({'; '.join(errors)})")


def _decode(source, indices, path):
    """`source.get(indices)`; any decoder failure becomes a VideoReadError naming the file."""
    try:
        return source.get(indices)
    except VideoReadError:
        raise
    except Exception as e:  # FFmpeg's and decord's errors come in many types
        raise VideoReadError(f"{path}: decoding failed ({type(e).__name__}: {e})") from e


def decode_frames(source, indices, path):
    """Frames ``indices`` of an open ``source`` (:func:`open_source`), in that order."""
    if not indices or indices[0] < 0 or max(indices) >= source.num_frames:
        raise VideoReadError(f"{path}: frame index out of range for {source.num_frames} frames")
    return _decode(source, list(indices), path)


def read_clips(path: str, choose, backend: str = DEFAULT_BACKEND) -> list[np.ndarray]:
    """Decode the frames of several clips of one video in a single pass.

    `choose(num_frames)` returns a list of index sequences (one per clip); the
    result is one uint8 `(T, H, W, 3)` array per clip. A decord failure while
    decoding retries the whole read with PyAV; whatever fails is a VideoReadError.
    """
    source = open_source(path, backend)
    try:
        index_sets = [np.asarray(ix, dtype=np.int64) for ix in choose(source.num_frames)]
        union = sorted(set(np.concatenate(index_sets).tolist()))
        if union[0] < 0 or union[-1] >= source.num_frames:
            raise ValueError(f"frame index out of range for {source.num_frames} frames")
        try:
            frames = _decode(source, union, path)
        except VideoReadError as first:
            if not isinstance(source, DecordVideo):
                raise
            source.close()
            try:
                source = PyAVVideo(path)
            except Exception as e:
                raise VideoReadError(f"{path}: decoding failed (decord: {first}; pyav: {e})") from e
            frames = _decode(source, union, path)
    finally:
        source.close()
    where = {t: k for k, t in enumerate(union)}
    picks = [ix.tolist() for ix in index_sets]
    return [frames if pick == union else frames[[where[i] for i in pick]] for pick in picks]


def count_frames(path: str, backend: str = DEFAULT_BACKEND) -> int:
    source = open_source(path, backend)
    try:
        return source.num_frames
    finally:
        source.close()


def video_fps(path: str) -> float | None:
    """Frames per second of a video file (None for frame folders, or when the container does not say)."""
    if os.path.isdir(path):
        return None
    try:
        with av.open(path) as c:
            rate = c.streams.video[0].average_rate
            return float(rate) if rate else None
    except (av.FFmpegError, IndexError, OSError):
        return None


def iter_frames(path: str, step: int = 1, max_frames: int | None = None):
    """Every `step`-th frame of a video file or frame folder, in order, as uint8 `(H, W, 3)` RGB,
    decoded one at a time (for videos too long to hold)."""
    if os.path.isdir(path):
        folder = FrameFolder(path)
        for k in range(0, folder.num_frames, step)[:max_frames]:
            yield folder.get([k])[0]
        return
    if not os.path.exists(path):
        raise VideoReadError(f"{path}: missing")
    try:
        container = av.open(path)
    except av.FFmpegError as e:
        raise VideoReadError(f"{path}: cannot open video ({e})") from e
    with container:
        if not container.streams.video:
            raise VideoReadError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        rgb, kept = VideoReformatter(), 0
        try:
            for i, frame in enumerate(container.decode(stream)):
                if max_frames is not None and kept >= max_frames:
                    break
                if i % step == 0:
                    kept += 1
                    yield upright(frame, rgb.reformat(frame, format="rgb24", threads=1).to_ndarray())
        except av.FFmpegError as e:
            raise VideoReadError(f"{path}: decoding failed after {kept} frames ({e})") from e


def write_mp4(path: str, frames, fps: float = 25, gop: int | None = None, crf: int = 18,
              options: dict | None = None) -> int:
    """H.264 mp4 (yuv420p) from uint8 `(H, W, 3)` RGB frames of even sides, given as an array or
    any iterable (written as they come); `gop` sets the keyframe interval, `options` adds libx264
    options. Returns the frame count."""
    count = 0
    with av.open(path, "w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "veryfast", "threads": "1",
                                  **({"g": str(gop)} if gop else {}), **(options or {})}
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            count += 1
        if stream is not None:
            container.mux(stream.encode())
    return count
