"""No module imports from a room of a higher layer than its own (the layers are those the package docstring lists)."""

import ast
import re
from pathlib import Path

import llava_ckd

PACKAGE = Path(llava_ckd.__file__).parent


def layers() -> dict[str, int]:
    found = {}
    for number, rooms in re.findall(r"^\s+layer (\d+)\s+([\w, ]+?)\s{2,}", llava_ckd.__doc__, re.M):
        found |= {room.strip(): int(number) for room in rooms.split(",")}
    return found


def room_of(module: str) -> str:
    return module.split(".")[1]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("llava_ckd."):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names if alias.name.startswith("llava_ckd.")}
    return names


def test_every_room_of_the_package_has_a_layer():
    rooms = {path.stem if path.is_file() else path.name for path in PACKAGE.iterdir()
             if (path.suffix == ".py" and path.stem != "__init__") or (path / "__init__.py").is_file()}
    assert rooms == set(layers())


def test_no_import_runs_back_up_to_a_higher_layer():
    layer = layers()
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        if relative.name == "__init__" and len(relative.parts) == 2:
            continue
        own = relative.parts[1]
        for module in imported_modules(path):
            if layer[room_of(module)] > layer[own]:
                upward.append(f"{'/'.join(relative.parts)} -> {module}")
    assert upward == []


def test_the_check_sees_an_import_that_runs_back_up(tmp_path):
    module = tmp_path / "upward.py"
    module.write_text("from llava_ckd.cascade.run import plan_cascade\n")
    assert layers()[room_of(next(iter(imported_modules(module))))] > layers()["models"]
