"""Where the face is in a pre-training frame (a light module: preprocessing imports it without torch)."""

# Fixed face crop of the release for 224x224 VoxCeleb2 face tracks: rows 0-160,
# cols 32-192 (upper centre, where the face sits). Other frame sizes get the
# same box scaled proportionally, except frames of the box's own size: those are
# taken as already cropped (what `python -m preprocess.voxceleb2 --recrop` writes).
FACE_BOX_224 = (0, 32, 160, 160)  # top, left, height, width
RECROPPED_SIZE = FACE_BOX_224[2:]


def face_box(height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the face in a frame of this size (the whole frame when it is
    already the face box's size, i.e. recropped)."""
    if (height, width) == RECROPPED_SIZE:
        return 0, 0, height, width
    top, left, h, w = FACE_BOX_224
    return (round(top * height / 224), round(left * width / 224),
            round(h * height / 224), round(w * width / 224))
