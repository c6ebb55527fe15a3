"""The code a rule runs, derived from imports: the modules its stage reaches, and their hash.

A rule's ``code`` param is the SHA-256 of every ``taskabs`` module its stage module imports,
transitively (package ``__init__`` files included, as Python runs them). Editing any of those
modules re-runs exactly the rules that reach it; editing anything else re-runs none. Imports under
``if TYPE_CHECKING:`` are not followed: they never run.
"""

from __future__ import annotations

import ast
import hashlib
from functools import cache
from pathlib import Path

PACKAGE = "taskabs"
SOURCE = Path(__file__).resolve().parents[1]  # src/taskabs


def module_path(module: str, source: Path = SOURCE) -> Path | None:
    """The file of a ``taskabs`` module (a package's ``__init__.py``), or None if there is none."""
    parts = module.split(".")[1:]
    base = source.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[str]:
    """Absolute module names imported anywhere in ``tree``, except under ``if TYPE_CHECKING``."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)  # submodules
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _with_parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@cache
def _imports_of(text: bytes) -> tuple[str, ...]:
    """Imports of a module's source, parsed once per distinct text (planning hashes every rule)."""
    return tuple(_imports(ast.parse(text)))


@cache
def reached_modules(module: str, source: Path = SOURCE) -> tuple[str, ...]:
    """Every ``taskabs`` module that importing ``module`` runs, sorted (``module`` included)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        for candidate in _with_parents(name):
            if candidate in seen or not candidate.startswith(PACKAGE):
                continue
            path = module_path(candidate, source)
            if path is None:  # a name imported from a module, not a module
                continue
            seen.add(candidate)
            todo.extend(_imports_of(path.read_bytes()))
    return tuple(sorted(seen))


def code_hash(module: str, source: Path = SOURCE) -> str:
    """SHA-256 over the path and bytes of each module :func:`reached_modules` finds."""
    digest = hashlib.sha256()
    for name in reached_modules(module, source):
        path = module_path(name, source)
        digest.update(f"{path.relative_to(source)}\0".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
