"""The house's layout: imports run one way, and the data types at the base need no OpenCV.

The base (``streamer/*.py``) imports no sub-package; ``api/``, ``sources/`` and ``outputs/``
import only the base; ``live/`` imports the base, ``api/`` and ``sources/``, and only
``live/pipeline.py``, the wiring, imports ``outputs/``; ``commands/`` and ``standin/`` may look
at everything.  docs/development.md draws the same rules.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "streamer"
ALLOWED = {
    "base": {"base"},
    "api": {"base", "api"},
    "sources": {"base", "sources"},
    "outputs": {"base", "outputs"},
    "live": {"base", "api", "sources", "live"},
    "commands": {"base", "api", "sources", "live", "outputs", "commands", "standin"},
    "standin": {"base", "api", "sources", "live", "outputs", "standin"},
}
WIRING = {"streamer/live/pipeline.py": {"outputs"}}  # the one place that wires outputs in


def part_of(module: str) -> str:
    """The part of the house a dotted module name (streamer.x.y) or a file belongs to."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] in ALLOWED:
        return parts[1]
    if parts[-1] == "__main__":
        return "commands"
    return "base"


def imports(path: Path) -> list[str]:
    """Every streamer module a file imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names if alias.name.startswith("streamer")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("streamer"):
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            # "from streamer import gstspec" names a module; "from streamer.x import y" a module or a name
            found += [n for n in names if (PACKAGE / Path(*n.split(".")[1:])).with_suffix(".py").exists()] or [
                node.module
            ]
    return found


def modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_imports_run_one_way():
    broken = []
    for path in modules():
        relative = path.relative_to(ROOT).as_posix()
        here = part_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
        allowed = ALLOWED[here] | WIRING.get(relative, set())
        for imported in imports(path):
            if part_of(imported) not in allowed:
                broken.append(f"{relative} ({here}) imports {imported} ({part_of(imported)})")
    assert broken == [], "\n".join(broken)


def test_the_walk_sees_an_upward_import():
    """The check above can fail: an output importing the live path is caught."""
    assert part_of("streamer.live.publisher") not in ALLOWED["outputs"]
    assert "streamer.live.pipeline" in imports(PACKAGE / "commands" / "run.py")


@pytest.mark.parametrize("module", ["streamer.types", "streamer.stats", "streamer.message", "streamer.queues"])
def test_the_data_types_need_no_opencv(module):
    code = f"import sys, {module}; sys.exit('cv2 was imported' if 'cv2' in sys.modules else 0)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr + done.stdout
