"""What ships runs with the runtime dependencies alone: no module of the product imports
a development-only package where it runs (type-only imports sit under TYPE_CHECKING).
`make run` installs only the runtime dependencies, so such an import stops the demo."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["config", "fleet", "portal", "agentina"]
DEVELOPMENT_ONLY = {
    "django_stubs_ext",
    "mypy",
    "pytest",
    "pytest_django",
    "model_bakery",
    "time_machine",
    "schemathesis",
    "playwright",
    "celery_types",
}


def _runtime_imports(tree: ast.Module) -> set[str]:
    """Top-level names imported anywhere but under `if TYPE_CHECKING:`."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_no_shipped_module_needs_a_development_package():
    wrong = {
        str(path.relative_to(ROOT)): sorted(found)
        for package in SHIPPED
        for path in sorted((ROOT / package).rglob("*.py"))
        if (found := _runtime_imports(ast.parse(path.read_text())) & DEVELOPMENT_ONLY)
    }
    assert not wrong, f"imported at run time: {wrong}"
