"""The README's Python examples run as written (a block that needs files the reader supplies, marked by a
``/path/to`` placeholder, is only compiled)."""
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    code = BLOCKS[index]
    compiled = compile(code, f"README.md python block {index + 1}", "exec")
    if "/path/to" in code:
        return
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    exec(compiled, {"__name__": f"readme_block_{index + 1}"})
