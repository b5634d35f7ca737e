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


def test_the_readme_is_a_short_runbook_that_starts_with_the_two_commands():
    """The README is the first page a newcomer reads: it starts with the demo and the test suite,
    and the reference material lives in docs/."""
    text = (REPO / "README.md").read_text()
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    assert first_block == ("bash setup.sh && bash scripts/demo/run_demo.sh\n"
                           "bash setup.sh && .venv/bin/python -m pytest -q tests\n")
    assert len(text) <= 10_000, len(text)


def anchor(heading):
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_documents_reach_their_file_and_heading():
    link = re.compile(r"\]\(([^)#\s]+\.md)(?:#([\w-]+))?\)")
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for target, fragment in link.findall(page.read_text()):
            path = (page.parent / target).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif fragment and fragment not in {anchor(h) for h in re.findall(r"^#+ (.*)$", path.read_text(), re.M)}:
                broken.append(f"{page.relative_to(REPO)}: {target}#{fragment}")
    assert not broken, broken
