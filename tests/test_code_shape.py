"""The package stays readable: small modules, short functions, no class hidden in a function,
no import cycle, and every public name reached by the course, the CLI or the app."""
import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "scratch_utils"
MODULES = sorted(PACKAGE.glob("*.py"))
MAX_MODULE_LINES = 600   # a concept (training: fit, callbacks, resume, the head fitted after) stays in one module
MAX_FUNCTION_LINES = 60


def tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def test_modules_are_at_most_600_lines():
    long = {p.name: n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}


def test_functions_are_at_most_60_lines_and_no_class_is_defined_inside_a_function():
    long, nested = [], []
    for path in MODULES:
        for node in ast.walk(tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.name}:{node.name} ({lines} lines)")
                nested += [f"{path.name}:{node.name}.{inner.name}" for inner in ast.walk(node)
                           if isinstance(inner, ast.ClassDef)]
    assert long == [] and nested == []


def module_imports(path: Path) -> set[str]:
    """The package modules a module imports, at its top and inside its functions alike (an
    import deferred into a function is still a dependency, and a cycle through it still one)."""
    found = set()
    for node in ast.walk(tree(path)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found - {"__init__"}


def test_no_import_cycle_between_package_modules():
    graph = {p.stem: module_imports(p) & {m.stem for m in MODULES} for p in MODULES}
    state: dict[str, str] = {}

    def visit(name, trail):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", f"import cycle: {' -> '.join(trail + [name])}"
        state[name] = "open"
        for imported in sorted(graph[name]):
            visit(imported, trail + [name])
        state[name] = "done"

    for name in graph:
        visit(name, [])


def public_names() -> dict[str, str]:
    names = {}
    for path in MODULES:
        for node in tree(path).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                names[node.name] = path.name
    return names


def course_text() -> str:
    """Where the product reaches code: the package itself, the notebooks' code cells, the CLI."""
    parts = [p.read_text(encoding="utf-8") for p in MODULES]
    parts += [(PACKAGE / "templates" / "page.html").read_text(encoding="utf-8")]
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
        parts += ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return "\n".join(parts)


def test_every_public_function_is_reached_by_the_course_the_cli_or_the_app():
    text = course_text()
    unused = [f"{module}:{name}" for name, module in public_names().items()
              if len(re.findall(rf"\b{name}\b", text)) < 2]   # its definition, and one use
    assert unused == [], "only tests use these: remove them or make them the path the course runs"
