"""The repository stands alone: no path outside it, and every document it cites is in it."""
import re
import subprocess

from conftest import REPO


def tracked_text_files():
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if n.endswith((".py", ".md", ".sh", ".toml", ".txt", ".yml", ".cfg"))
            or n.startswith(".ci/")]


def test_nothing_refers_outside_the_repository():
    outside = re.compile(r"\.\./shared|parent\s*/\s*[\"']shared[\"']|/work/")
    hits = [f"{p.relative_to(REPO)}:{i}" for p in tracked_text_files() if p != REPO / "tests/test_repository.py"
            for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if outside.search(line)]
    assert not hits, hits


def test_cited_documents_exist():
    cited = re.compile(r"\b((?:docs|tests/data)/[\w./-]+\.(?:md|json|pt))")
    missing = {m for p in tracked_text_files() for m in cited.findall(p.read_text(errors="replace"))
               if not (REPO / m).exists()}
    assert not missing, sorted(missing)
