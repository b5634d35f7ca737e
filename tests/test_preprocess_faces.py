"""The face detector on real photographs (Debian opencv-doc's images), the tracker on made-up
detections and on a real video (Megamind.avi: four shots, one face each)."""
import numpy as np
import pytest
from PIL import Image

from conftest import OPENCV_DATA
from preprocess.faces import Faces, FaceDetector, IoUTracker, TrackConfig, centre_side, iou, smooth_track, track_faces

DOCS = OPENCV_DATA.parents[1] / "opencv4" / "html"  # the documentation's pictures


def image(path):
    if not path.is_file():
        pytest.fail(f"{path} is missing; run setup.sh (it installs Debian's opencv-doc)")
    return np.asarray(Image.open(path).convert("RGB"))


def test_every_face_of_a_photograph_is_found():
    """facereg.jpg is a 2 x 2 grid of portraits: one face per quadrant, each filling about a third of it."""
    img = image(DOCS / "facereg.jpg")
    faces = FaceDetector(min_face=0.25)(img)
    assert faces.boxes.shape == (4, 4) and faces.scores.shape == (4,) and (faces.scores > 0).all()
    c = centre_side(faces.boxes)
    quadrants = {(int(x // 100), int(y // 100)) for x, y, _ in c}
    assert quadrants == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert ((c[:, 2] > 45) & (c[:, 2] < 80)).all()
    assert (np.abs(c[:, :2] % 100 - 50) < 15).all()  # centred in their tiles


def test_small_face_in_a_crowd_and_min_face():
    """messi5.jpg: the player's face is ~37 px in a 342 px high picture (the crowd is blurred)."""
    img = image(OPENCV_DATA / "messi5.jpg")
    faces = FaceDetector(min_face=0.1)(img)
    assert len(faces) == 1
    x, y, side = centre_side(faces.boxes)[0]
    assert abs(x - 245) < 10 and abs(y - 113) < 10 and 30 < side < 45
    # Asked for faces of at least a fifth of the picture, the detector does not look at smaller ones.
    assert len(FaceDetector(min_face=0.2)(img)) == 0


def test_boxes_are_in_the_pixels_of_the_frame_given():
    img = image(DOCS / "facereg.jpg")
    big = np.asarray(Image.fromarray(img).resize((400, 400), Image.BICUBIC))
    small, large = FaceDetector(0.25)(img), FaceDetector(0.25)(big)
    order = lambda f: f.boxes[np.lexsort((f.boxes[:, 1], f.boxes[:, 0]))]  # noqa: E731
    np.testing.assert_allclose(order(large), 2 * order(small), atol=4)


@pytest.mark.parametrize("name", ["fruits.jpg", "baboon.jpg", "HappyFish.jpg"])
def test_no_face_where_there_is_none(name):
    faces = FaceDetector(min_face=0.1)(image(OPENCV_DATA / name))
    assert faces.boxes.shape == (0, 4) and faces.scores.shape == (0,) and faces.largest() is None


def test_blank_and_grey_frames():
    assert len(FaceDetector()(np.zeros((120, 160, 3), np.uint8))) == 0
    grey = np.asarray(Image.open(DOCS / "facereg.jpg").convert("L"))
    assert len(FaceDetector(0.25)(grey)) == 4


def test_bad_min_face():
    with pytest.raises(ValueError, match="min_face"):
        FaceDetector(min_face=0)


def test_iou_and_largest():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 5, 5]])
    np.testing.assert_allclose(iou(a, b), [[1.0, 50 / 150, 0.0, 0.25]])
    assert iou(np.zeros((0, 4)), b).shape == (0, 4)
    faces = Faces(b.astype(float), np.array([0.5, 2.0, 0.1, 3.0]))
    assert faces.largest() == 1  # areas tie with face 0: the higher score wins
    np.testing.assert_allclose(centre_side(b[:1]), [[5, 5, 10]])


def box(x, y, side=40):
    return [x - side / 2, y - side / 2, x + side / 2, y + side / 2]


def run_tracker(frames, **kw):
    tracker = IoUTracker(**kw)
    for t, boxes in frames:
        tracker.update(t, Faces(np.array(boxes, float).reshape(-1, 4), np.ones(len(boxes))))
    return tracker


def test_tracker_follows_faces_that_move_appear_and_leave():
    # A walks right 3 px a frame and is missed at frames 12-16; B appears at 10 and leaves after 29;
    # C appears where B was, 20 frames later: someone (or something) new.
    frames = []
    for t in range(60):
        boxes = [] if 12 <= t <= 16 else [box(50 + 3 * t, 60)]
        if 10 <= t <= 29:
            boxes.append(box(300, 60 + t))
        if t >= 50:
            boxes.append(box(300, 80))
        frames.append((t, boxes))
    tracks = run_tracker(frames, max_gap=8).tracks()
    assert [(tr.start, tr.end, len(tr.frames)) for tr in tracks] == [(0, 59, 55), (10, 29, 20), (50, 59, 10)]
    a = tracks[0].raw()
    assert np.isnan(a[12:17]).all() and not np.isnan(a[[11, 17]]).any()
    np.testing.assert_allclose(tracks[0].smoothed(smooth=1)[12:17, 0], 50 + 3 * np.arange(12, 17))
    # A shorter gap allowance splits A at its miss; a cut ends every track.
    assert [(tr.start, tr.end) for tr in run_tracker(frames, max_gap=3).tracks()][:2] == [(0, 11), (10, 29)]
    tracker = run_tracker(frames[:20])
    tracker.cut()
    tracker.update(20, Faces(np.array([box(110, 60)]), np.ones(1)))
    assert [(tr.start, tr.end) for tr in tracker.tracks()] == [(0, 19), (10, 19), (20, 20)]
    assert [(tr.start, tr.end) for tr in tracker.tracks(min_detections=4)] == [(0, 19), (10, 19)]


def test_tracker_keeps_side_by_side_faces_apart():
    frames = [(t, [box(100, 100, 80), box(170 + t, 100, 80)]) for t in range(10)]  # 10 px apart, one moving
    tracks = run_tracker(frames).tracks()
    assert len(tracks) == 2 and all(len(tr.frames) == 10 for tr in tracks)
    np.testing.assert_allclose(tracks[1].raw()[:, 0], 170 + np.arange(10))


def test_megamind_one_track_per_shot(opencv_data):
    """Megamind.avi (270 frames) cuts at frames 98, 154 and 200, with one face in front in each
    shot (the first frame is black). Every other frame is read (the cuts fall at 49, 77 and 100 of
    those) and the detector looks at every other one of those (even indices): each track starts at
    the first frame looked at in its shot and ends where the shot ends."""
    from preprocess.face_crop import read_frames
    frames = list(read_frames(opencv_data / "Megamind.avi", step=2))
    tracks, n = track_faces(frames, TrackConfig(min_face=0.25))
    assert n == 135
    assert [(tr.id, tr.start, tr.end) for tr in tracks] == [(0, 2, 48), (1, 50, 76), (2, 78, 99), (3, 100, 134)]
    for tr in tracks:
        assert tr.thumbnail.shape == (128, 128, 3) and tr.best_score == max(tr.scores)
        assert len(tr.frames) >= 0.4 * len(tr)  # detected in most of the frames looked at


@pytest.mark.parametrize("smooth", [1, 4, 5, 30])
def test_track_smoothing_is_a_centred_moving_average_with_the_ends_repeated(smooth):
    rng = np.random.default_rng(smooth)
    raw = np.stack([100 + np.cumsum(rng.normal(0, 0.5, 12)), np.full(12, 80.0), 40 + rng.normal(0, 0.3, 12)], 1)
    k = min(smooth, len(raw))
    expected = []
    for i in range(len(raw)):  # frames i - k//2 .. i + k - 1 - k//2, indices clamped to the track
        rows = [raw[min(max(j, 0), len(raw) - 1)] for j in range(i - k // 2, i + k - k // 2)]
        expected.append(np.mean(rows, axis=0))
    np.testing.assert_allclose(smooth_track(raw, smooth, jump=10.0), expected, rtol=0, atol=1e-9)
