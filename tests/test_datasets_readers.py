import cv2
import numpy as np
import pytest

from conftest import REPO

from datasets.demo import write_frames, write_mp4
from datasets.video_io import (DecordVideo, PyAVVideo, VideoReadError, list_frame_files,
                               open_source, read_clips)

N = 40


def indexed_frames(n=N, h=48, w=64):
    """Frame k: grey level 20 + 5k and a bright square at column k, so every
    frame is told apart from its neighbours even after lossy coding."""
    frames = np.empty((n, h, w, 3), np.uint8)
    for k in range(n):
        frames[k] = 20 + 5 * k
        frames[k, 8:20, k:k + 12] = 250
    return frames


@pytest.fixture(scope="module")
def mp4(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("mp4") / "indexed.mp4")
    write_mp4(path, indexed_frames(), gop=10)  # several keyframes, so seeking is exercised
    return path


def assert_frames(got, truth, indices, tol=2.0):
    assert got.shape == (len(indices),) + truth.shape[1:] and got.dtype == np.uint8
    for k, i in enumerate(indices):
        err = np.abs(got[k].astype(float) - truth[i]).mean()
        assert err < tol, f"frame {i}: mean abs error {err:.1f}"


@pytest.mark.parametrize("backend,cls", [("decord", DecordVideo), ("pyav", PyAVVideo)])
def test_mp4_frames_exact_positions(mp4, backend, cls):
    truth = indexed_frames()
    indices = [37, 0, 12, 12, 25, 39, 9, 10, 11]  # unsorted, repeated, across keyframes
    src = open_source(mp4, backend)
    try:
        assert isinstance(src, cls) and src.num_frames == N
        assert_frames(src.get(indices), truth, indices)
    finally:
        src.close()


def test_backends_agree_on_mp4(mp4):
    indices = list(range(0, N, 3))
    a = open_source(mp4, "decord").get(indices).astype(int)
    b = open_source(mp4, "pyav").get(indices).astype(int)
    assert np.abs(a - b).max() <= 3  # both decode the same stream; only colour conversion may round


def cv2_sequential(path, upto):
    """Reference decode: OpenCV, frame after frame from the start."""
    cap = cv2.VideoCapture(path)
    frames = []
    while len(frames) <= upto:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame[..., ::-1])
    cap.release()
    return frames


@pytest.mark.parametrize("name,count,indices", [
    ("Megamind.avi", 270, [150, 0, 5, 100, 269]),
    # Broken header (frame rate 30 instead of 24): frame positions must not depend on it.
    ("Megamind_bugy.avi", 270, [269, 3, 100]),
    # The container claims 444 frames; 68 exist.
    ("tree.avi", 68, [0, 30, 67]),
])
def test_real_videos_both_backends(opencv_data, name, count, indices):
    path = str(opencv_data / name)
    reference = cv2_sequential(path, max(indices))
    truth = {i: reference[i] for i in indices}
    for backend in ("decord", "pyav"):
        src = open_source(path, backend)
        try:
            assert src.num_frames == count
            got = src.get(indices)
        finally:
            src.close()
        for k, i in enumerate(indices):
            assert np.abs(got[k].astype(int) - truth[i]).mean() < 1.0, (backend, i)


def test_read_clips_shares_one_decode(mp4):
    clips = read_clips(mp4, lambda n: [[0, 4, 8], [n - 1, 4]], "pyav")
    truth = indexed_frames()
    assert_frames(clips[0], truth, [0, 4, 8])
    assert_frames(clips[1], truth, [39, 4])
    with pytest.raises(ValueError, match="out of range"):
        read_clips(mp4, lambda n: [[n]])


def test_frame_folder_natural_order_and_lazy_reading(tmp_path):
    truth = indexed_frames(n=12)
    folder = tmp_path / "clip"
    write_frames(str(folder), truth, "png")  # img_1.png ... img_12.png, unpadded
    (folder / "notes.txt").write_text("not a frame")
    names = [p.rsplit("/", 1)[1] for p in list_frame_files(str(folder))]
    assert names == [f"img_{k}.png" for k in range(1, 13)]
    # Frames the clip does not ask for are never opened: corrupt them.
    for k in (2, 5, 6, 12):
        (folder / f"img_{k}.png").write_bytes(b"garbage")
    src = open_source(str(folder))
    assert src.num_frames == 12
    indices = [0, 2, 3, 6, 10, 2]
    got = src.get(indices)
    np.testing.assert_array_equal(got, truth[indices])  # png: lossless
    with pytest.raises(VideoReadError, match="img_2.png: unreadable"):
        src.get([1])


def test_unreadable_inputs(tmp_path, mp4):
    with pytest.raises(VideoReadError, match="missing"):
        open_source(str(tmp_path / "nope.mp4"))
    (tmp_path / "zero.mp4").write_bytes(b"")
    with pytest.raises(VideoReadError, match="0 bytes"):
        open_source(str(tmp_path / "zero.mp4"))
    data = open(mp4, "rb").read()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoReadError, match=r"cannot open video \(pyav: "):
        open_source(str(tmp_path / "cut.mp4"))
    with pytest.raises(VideoReadError, match="cannot open video.*decord.*pyav"):
        open_source(str(tmp_path / "cut.mp4"), "decord")  # decord failed, then its fallback
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(VideoReadError, match="no .jpg"):
        open_source(str(tmp_path / "empty_dir"))
    with pytest.raises(ValueError, match="backend"):
        open_source(mp4, "opencv")


def test_decord_decoding_failure_falls_back_to_pyav(tmp_path):
    """decord opens 48-px-wide H.264 but fails to copy its frames out (its frame buffer is
    padded to a wider row); the decord backend must then read the clip through PyAV."""
    path = str(tmp_path / "narrow.mp4")
    frames = indexed_frames(w=48)
    write_mp4(path, frames, gop=10)
    src = DecordVideo(path)
    try:
        src.get([0])
    except Exception:
        pass
    else:
        pytest.skip("this decord reads 48-px-wide frames: there is no failure to fall back from")
    finally:
        src.close()
    indices = [3, 7, 11, 30]
    (clip,) = read_clips(path, lambda n: [indices], "decord")
    assert_frames(clip, frames, indices)


def test_pyav_reader_runs_on_the_calling_thread_alone(mp4):
    """One decoding thread per DataLoader worker: neither the decoder nor the RGB converter
    may start threads of their own (PyAV's converter would by default, one per core, and a
    converter's threads do not survive the fork into a worker)."""
    import os

    def threads():
        return len(os.listdir(f"/proc/{os.getpid()}/task"))
    before = threads()
    src = open_source(mp4, "pyav")
    try:
        assert_frames(src.get([3, 17, 31]), indexed_frames(), [3, 17, 31])
        assert threads() == before
    finally:
        src.close()


def test_pyav_seeks_instead_of_decoding_everything(mp4):
    src = PyAVVideo(mp4)  # keyframes at 0, 10, 20, 30
    assert_frames(src.get([35]), indexed_frames(), [35])
    assert src.decoded <= 8  # from keyframe 30 (plus decoder delay), not from frame 0
    src.decoded = 0
    assert_frames(src.get([2, 33]), indexed_frames(), [2, 33])
    assert src.decoded <= 3 + 8
    src.close()


def test_pyav_skips_unwanted_non_reference_frames(tmp_path):
    """x264 codes most frames as B-frames that no other frame refers to: a strided clip
    must come back exact while those frames between its own are never decoded."""
    path = str(tmp_path / "one_keyframe.mp4")
    write_mp4(path, indexed_frames(), gop=N)  # one keyframe: everything before a frame is decoded
    src = PyAVVideo(path)
    for indices in ([1, 5, 9, 13, 17, 21, 25, 29, 33, 37], [2, 6, 10, 14, 18, 22, 26, 30, 34, 38]):
        src.decoded = 0
        assert_frames(src.get(indices), indexed_frames(), indices)
        assert src.decoded < indices[-1] + 1 - 8, src.decoded  # well under the frames up to the last
    src.close()


def test_png_folders_survive_decord_imported_first(tmp_path):
    """decord's wheel ships an old zlib that breaks OpenCV's PNG reader when decord
    is imported first; frame folders must still read (they use Pillow)."""
    import subprocess
    import sys
    write_frames(str(tmp_path / "f"), indexed_frames(n=3), "png")
    code = ("import decord, numpy as np; from datasets.video_io import open_source; "
            f"print(open_source({str(tmp_path / 'f')!r}).get([0, 1, 2]).mean(axis=(1, 2, 3)).round(1).tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert eval(out.stdout) == [float(v) for v in indexed_frames(n=3).mean(axis=(1, 2, 3)).round(1)]


def corrupt_tail(src, dst):
    """An mp4 whose header and first frames are intact but whose later frames are noise: decord
    opens it and fails while decoding, and so does PyAV."""
    data = bytearray(open(src, "rb").read())
    start, moov = data.find(b"mdat"), data.find(b"moov")
    begin = (start + moov) // 2
    data[begin:moov - 8] = np.random.default_rng(0).bytes(moov - 8 - begin)
    open(dst, "wb").write(bytes(data))
    return dst


@pytest.mark.parametrize("backend", ["decord", "pyav"])
def test_a_video_that_opens_but_cannot_be_decoded_is_a_read_error(tmp_path, backend):
    path = str(tmp_path / "noisy.mp4")
    write_mp4(str(tmp_path / "good.mp4"), np.random.default_rng(1).integers(0, 256, (40, 64, 64, 3), np.uint8))
    corrupt_tail(str(tmp_path / "good.mp4"), path)
    src = open_source(path, backend)  # the header is fine: the failure comes while decoding
    src.close()
    src.close()  # closing twice is harmless (the fallback path does)
    with pytest.raises(VideoReadError, match="noisy.mp4: decoding failed"):
        read_clips(path, lambda n: [[0, 10, 20, 30, 39]], backend)
    from datasets import check
    assert check.check_sample(path, backend).startswith(f"{path}: decoding failed")
