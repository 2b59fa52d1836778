"The package's shape: imports run one way (no circles), and no module is over about 300 lines (generated index aside)."
import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "recnb"
MAX_LINES = 300
GENERATED = {"_modidx"}  # nbdev's index of the docs


def _imports(path: Path) -> set[str]:
    "The recnb modules `path` imports, at the top or inside functions."
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("recnb.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module: found.add(node.module.split(".")[0])
            elif node.module and node.module.startswith("recnb."): found.add(node.module.split(".")[1])
            elif node.module == "recnb" or (node.level == 1 and not node.module): found |= {a.name for a in node.names}
    return found - {path.stem}


def modules() -> dict[str, Path]:
    return {p.stem: p for p in PACKAGE.glob("*.py") if p.stem not in GENERATED | {"__init__"}}


def test_the_package_imports_have_no_circle():
    found = modules()
    graph = {name: _imports(path) & set(found) for name, path in found.items()}
    assert graph["model"] >= {"pairs", "towers", "params"}  # the parser sees imports (a test that can fail)
    try: order = list(TopologicalSorter(graph).static_order())
    except CycleError as e: raise AssertionError(f"import circle: {' -> '.join(e.args[1])}") from None
    assert order.index("config") < order.index("cli")


def test_no_module_is_over_about_300_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert len(sizes) > 10
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES * 1.1}
    assert not too_long, f"modules over {MAX_LINES} lines (by 10 %): {too_long}; split them by job"
