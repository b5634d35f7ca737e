import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# Tests are sized for a 2-core CPU; more threads than cores only adds contention.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def shared_dir():
    if not SHARED.is_dir():
        pytest.fail(f"shared/ material not found beside the checkout at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def opencv_data():
    if not (OPENCV_DATA / "Megamind.avi").is_file():
        pytest.fail("Debian's opencv-doc sample videos are missing; run setup.sh (it installs opencv-doc)")
    return OPENCV_DATA
