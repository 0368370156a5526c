"""Run the Python example of a model card as written (the first code a user copies)."""

from __future__ import annotations

import re
from pathlib import Path


def run_card_snippet(folder: Path) -> dict:
    """Execute the first ```python block of ``folder/README.md`` with its placeholder paths pointed at
    ``folder``; returns the snippet's variables."""
    card = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    code = code.replace("path/to/this/folder", str(folder)).replace('"smile.csv"', repr(str(folder / "smile.csv")))
    scope: dict = {}
    exec(compile(code, f"{folder / 'README.md'}", "exec"), scope)  # noqa: S102 - our own card template
    return scope
