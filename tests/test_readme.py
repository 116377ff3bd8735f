"""The README's Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def test_readme_python_blocks_run(tmp_path, monkeypatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, "the README shows the Python API"
    monkeypatch.chdir(tmp_path)  # plan.save("plan.yaml") writes here
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - the project's own README
    assert (tmp_path / "plan.yaml").is_file()


def test_docs_and_package_stand_alone() -> None:
    """Nothing users get points into the developers' folder beside the project (../shared)."""
    root = README.parent
    files = [README, *root.glob("docs/**/*.md"), *root.glob("tlplan/**/*.py"), *root.glob("tlplan/profiles/*/*.json")]
    assert len(files) > 50
    pointing = [str(f.relative_to(root)) for f in files if re.search(r"\bshared/(reference|DESIGN)", f.read_text(encoding="utf-8"))]
    assert not pointing, pointing
