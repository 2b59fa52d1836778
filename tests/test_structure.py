"""The package's shape: the stages are its rooms (subpackages), imports run one way (no circles, never from a stage to a
later one), no module is over about 300 lines and no function over about 60 (generated index aside)."""
import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "recnb"
MAX_LINES, MAX_FUNCTION_LINES = 300, 60
GENERATED = {"_modidx"}  # nbdev's index of the docs
# The stages in the order data flows through them (DESIGN.md, "Stages"): a module may import its own stage and earlier
# ones. `config` and `names` import nothing of recnb; `params` is the parameter file's schema, read from `index` on.
STAGES = ("config", "names", "data", "params", "index", "rank", "train", "run", "serve", "ab", "loop", "cli")


def modules() -> dict[str, Path]:
    "Every module by its dotted name under recnb (`data.tables`, `config`), packages' `__init__` aside."
    return {".".join(p.relative_to(PACKAGE).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")
            if p.stem not in GENERATED | {"__init__"}}


def _imports(name: str, path: Path) -> set[str]:
    "The recnb modules (dotted, under recnb) that module `name` imports, at the top or inside functions."
    package = name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.removeprefix("recnb.") for a in node.names if a.name.startswith("recnb.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level: base = package[:len(package) - node.level + 1]
            elif node.module and (node.module == "recnb" or node.module.startswith("recnb.")): base = []
            else: continue
            module = ".".join(base + ([m for m in (node.module or "").split(".") if m and m != "recnb"]))
            found |= {f"{module}.{a.name}".strip(".") for a in node.names} | {module}
    known = modules()
    return {m for m in found if m in known} - {name}


def stage_of(name: str) -> str: return name.split(".")[0]


def test_every_module_lives_in_a_known_stage():
    stray = sorted(n for n in modules() if stage_of(n) not in STAGES)
    assert not stray, f"modules outside the stages {STAGES}: {stray}"
    assert {stage_of(n) for n in modules()} == set(STAGES)


def test_the_package_imports_have_no_circle_and_run_one_way():
    found = modules()
    graph = {name: _imports(name, path) for name, path in found.items()}
    assert graph["train.model"] >= {"train.pairs", "train.towers", "params"}  # the parser sees imports (a test that can fail)
    assert "serve.feedback" in graph["serve.serving"] and "data.bundles" in graph["rank.evaluate"]
    try: order = list(TopologicalSorter(graph).static_order())
    except CycleError as e: raise AssertionError(f"import circle: {' -> '.join(e.args[1])}") from None
    assert order.index("config") < order.index("cli.main")
    upward = [f"{name} ({stage_of(name)}) imports {other} ({stage_of(other)})" for name, imported in graph.items()
              for other in imported if STAGES.index(stage_of(other)) > STAGES.index(stage_of(name))]
    assert not upward, "imports from a later stage:\n" + "\n".join(upward)


def test_no_module_is_over_about_300_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert len(sizes) > 10
    too_long = {name: n for name, n in sizes.items() if n > MAX_LINES * 1.1}
    assert not too_long, f"modules over {MAX_LINES} lines (by 10 %): {too_long}; split them by job"


def test_no_function_is_over_about_60_lines_without_a_reason():
    "A function's body (its docstring aside) is at most about 60 lines, or a `# long:` comment beside its `def` says why."
    too_long = {}
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)): continue
            body = node.body[1:] if isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) else node.body
            size = node.end_lineno - body[0].lineno + 1 if body else 0
            reason = any("# long:" in line for line in lines[node.lineno - 2:body[0].lineno - 1] if body)
            if size > MAX_FUNCTION_LINES * 1.1 and not reason: too_long[f"{name}.{node.name}"] = size
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (by 10 %) without a `# long:` reason: {too_long}"


def _mixes_imports_with_code(source: str) -> bool:
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.splitlines()]
    try: top = ast.parse("\n".join(lines)).body
    except SyntaxError: return False
    imports = [n for n in top if isinstance(n, (ast.Import, ast.ImportFrom))]
    return bool(imports) and len(imports) < len(top)


def test_no_documented_notebook_cell_mixes_imports_with_code():
    "A module notebook's imports stand in cells of their own."
    # nbdev runs a module notebook's import cells alone when it processes the docs (`nbdev-proc-nbs`, and `nbdev-test`
    # from nbdev 3.3): a cell that also uses a name an earlier cell made fails there (the twentieth stop's CI: NameError).
    import nbformat
    mixed = []
    for path in sorted((PACKAGE.parent / "nbs").rglob("*.ipynb")):
        cells = [(c.source, c.cell_type) for c in nbformat.read(path, as_version=4).cells]
        if not any(kind == "code" and s.lstrip().startswith("#| export") for s, kind in cells): continue
        mixed += [f"{path.name} cell {i}: {s.splitlines()[0]!r}" for i, (s, kind) in enumerate(cells)
                  if kind == "code" and "nbdev_export" not in s and "#| export" not in s and _mixes_imports_with_code(s)]
    assert _mixes_imports_with_code("import os\nx = os.sep") and not _mixes_imports_with_code("#| hide\nimport os")
    assert not mixed, "put these imports in a cell of their own:\n" + "\n".join(mixed)
