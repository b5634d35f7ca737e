import gzip
import os

import pytest

from datasets.annotations import AnnotationError, parse_prefix_map, read_annotations

# A made-up absolute prefix standing for the authors' machines in the release's CSVs.
AUTHORS_PREFIX = "/data/authors/DFEW"


def _write_prefixed(src_gz, dst, prefix):
    with gzip.open(src_gz, "rt") as f, open(dst, "w") as g:
        for line in f:
            g.write(f"{prefix}/{line}")


def test_release_csv_through_prefix_map(data_dir, tmp_path):
    split = data_dir / "reference_splits/dfew/org/split01"
    root = tmp_path / "DFEW"
    counts = {}
    for name in ("train", "test"):
        csv = tmp_path / f"{name}.csv"
        _write_prefixed(split / f"{name}.csv.gz", csv, AUTHORS_PREFIX)
        samples = read_annotations(csv, prefix_map=[f"{AUTHORS_PREFIX}={root}"], num_classes=7)
        assert all(s.path.startswith(str(root) + os.sep) for s in samples)
        assert {s.label for s in samples} == set(range(7))
        counts[name] = len(samples)
    assert counts == {"train": 9356, "test": 2341}
    first = read_annotations(tmp_path / "test.csv", prefix_map={AUTHORS_PREFIX: str(root)})[0]
    assert first.path == str(root / "Clip/jpg_256/00001") and first.label == 1 and first.line == 1


@pytest.mark.parametrize("rel,classes,count", [
    ("ferv39k/all_scenes/train.csv.gz", 7, 31088),
    ("mafw/single/split01/test.csv.gz", 11, 1839),
    ("crema-d/split01/train.csv.gz", 6, 5979),
])
def test_reference_splits_load_gzipped(data_dir, rel, classes, count):
    samples = read_annotations(data_dir / "reference_splits" / rel, data_root="/ds",
                               num_classes=classes)
    assert len(samples) == count
    assert all(s.path.startswith("/ds/") and 0 <= s.label < classes for s in samples)


@pytest.mark.parametrize("line,reason", [
    ("b.mp4", "expected 2 space-separated fields"),
    ("b.mp4 1 2", "expected 2 space-separated fields"),
    ("b.mp4 happy", "not an integer"),
    ("b.mp4 7", "out of range for 7 classes"),
    ("b.mp4 -1", "out of range"),
])
def test_malformed_line_names_file_and_line(tmp_path, line, reason):
    csv = tmp_path / "bad.csv"
    csv.write_text(f"a.mp4 0\n\n{line}\n")
    with pytest.raises(AnnotationError, match=f"bad.csv:3: .*{reason}"):
        read_annotations(csv, num_classes=7)


def test_regression_targets(tmp_path):
    csv = tmp_path / "reg.csv"
    csv.write_text("a.mp4 0.5 -1 2e-1\nclip_dir 1 2 3\n")
    samples = read_annotations(csv)  # three values on the first line: regression
    assert [s.label for s in samples] == [(0.5, -1.0, 0.2), (1.0, 2.0, 3.0)]
    assert read_annotations(csv, num_targets=3)[1].label == (1.0, 2.0, 3.0)
    with pytest.raises(AnnotationError, match="reg.csv:1: expected 3"):
        read_annotations(csv, num_targets=2)
    csv.write_text("a.mp4 0.5 x 1\n")
    with pytest.raises(AnnotationError, match="reg.csv:1: non-numeric"):
        read_annotations(csv, num_targets=3)


def test_path_resolution(tmp_path):
    csv = tmp_path / "sub" / "a.csv"
    csv.parent.mkdir()
    csv.write_text("v/a.mp4 0\n/old/long/b.mp4 1\n/old/c.mp4 2\n/abs/d.mp4 3\n")
    pmap = ["/old=/new", "/old/long=rel"]
    s = read_annotations(csv, data_root="/ds", prefix_map=pmap)
    assert [x.path for x in s] == ["/ds/v/a.mp4", "/ds/rel/b.mp4", "/new/c.mp4", "/abs/d.mp4"]
    # Without a data root, relative paths resolve next to the annotation file.
    assert read_annotations(csv)[0].path == str(tmp_path / "sub" / "v" / "a.mp4")


def test_parse_prefix_map():
    assert parse_prefix_map(["/a=/b", "/c=", "x=y=z"]) == {"/a": "/b", "/c": "", "x": "y=z"}
    assert parse_prefix_map(None) == {}
    with pytest.raises(ValueError, match="OLD=NEW"):
        parse_prefix_map(["/a/b"])


def test_empty_file_is_an_error(tmp_path):
    csv = tmp_path / "empty.csv"
    csv.write_text("\n")
    with pytest.raises(AnnotationError, match="no samples"):
        read_annotations(csv)


def test_byte_order_mark_is_ignored(tmp_path):
    csv = tmp_path / "bom.csv"
    csv.write_bytes("\ufeffa.mp4 0\nb.mp4 1\n".encode("utf-8"))
    assert [s.path for s in read_annotations(csv, data_root="/d")] == ["/d/a.mp4", "/d/b.mp4"]
    gz = tmp_path / "bom.csv.gz"
    with gzip.open(gz, "wb") as f:
        f.write("\ufeffa.mp4 0\n".encode("utf-8"))
    assert read_annotations(gz, data_root="/d")[0].path == "/d/a.mp4"


def test_text_that_is_not_utf8_names_file_and_line(tmp_path):
    csv = tmp_path / "latin1.csv"
    csv.write_bytes("a.mp4 0\ncaf\xe9/b.mp4 1\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match=r"latin1.csv:2: not UTF-8 text \(byte 0xe9 at column 4\)"):
        read_annotations(csv)


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity"])
def test_non_finite_regression_targets_are_refused(tmp_path, value):
    csv = tmp_path / "reg.csv"
    csv.write_text(f"a.mp4 0.5 0.25\nb.mp4 {value} 0.5\n")
    with pytest.raises(AnnotationError, match="reg.csv:2: non-finite regression target"):
        read_annotations(csv)


def test_missing_file_and_folder_are_annotation_errors(tmp_path):
    with pytest.raises(AnnotationError, match="annotation file not found: .*nope.csv"):
        read_annotations(tmp_path / "nope.csv")
    with pytest.raises(AnnotationError, match="is a folder"):
        read_annotations(tmp_path)
