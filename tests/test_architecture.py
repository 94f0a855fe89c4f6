"""Architecture rules for src/annealbench, checked on the source text with ``ast``.

1. A module uses only the public names of the other annealbench modules: no
   ``from annealbench.x import _y`` and no ``x._y`` where ``x`` is an imported annealbench
   module (``import annealbench.x as x``, ``from annealbench import x``, relative imports and
   ``annealbench.x._y`` too). Dunder names (``__version__``) are public; a module's own
   private names are its own business.
2. No class over :data:`MAX_CLASS_LINES` lines and no function over
   :data:`MAX_FUNCTION_LINES` lines (``def``/``class`` line to last line), unless a
   ``# long: <reason>`` comment sits on the ``def``/``class`` line or the line above it (or
   above its first decorator).

Each test prints every offender and fails listing them.
"""

from __future__ import annotations

import ast
import re
import textwrap
from pathlib import Path

PACKAGE = "annealbench"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 80
LONG_REASON = re.compile(r"#\s*long:\s*\S")


def module_name(path: Path) -> str:
    """``src/annealbench/report/paper.py`` -> ``annealbench.report.paper``."""
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


def _import_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads from."""
    if node.level == 0:
        return node.module or ""
    package = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def private_uses(
    source: str, module: str, known: set[str], is_package: bool = False
) -> list[tuple[int, str]]:
    """(line, what) for every use in ``source`` (module ``module``) of a private name of
    another annealbench module; ``known`` is every annealbench module name."""
    tree = ast.parse(source)
    aliases: dict[str, str] = {}  # local name -> the annealbench module it is bound to
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if not _ours(alias.name):
                    continue
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:  # `import annealbench.x` binds `annealbench`
                    aliases[alias.name.partition(".")[0]] = alias.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom):
            base = _import_base(node, module, is_package)
            if not _ours(base):
                continue
            for alias in node.names:
                if is_private(alias.name) and base != module:
                    found.append((node.lineno, f"from {base} import {alias.name}"))
                if f"{base}.{alias.name}" in known:
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"

    def target(expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Name):
            return aliases.get(expr.id)
        if isinstance(expr, ast.Attribute):
            base = target(expr.value)
            return f"{base}.{expr.attr}" if base else None
        return None

    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and is_private(node.attr)):
            continue
        owner = target(node.value)
        if owner is None:
            continue
        # The module the name belongs to: the longest known module that `owner` starts with.
        parts = owner.split(".")
        prefixes = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
        home = next((p for p in prefixes if p in known), None)
        if home is not None and home != module:
            found.append((node.lineno, f"{ast.unparse(node.value)}.{node.attr} ({home})"))
    return sorted(found)


def long_definitions(source: str) -> list[tuple[int, str, int, int]]:
    """(line, qualified name, length, limit) of every class over MAX_CLASS_LINES and function
    over MAX_FUNCTION_LINES lines without a ``# long: <reason>`` comment."""
    lines = source.splitlines()
    found: list[tuple[int, str, int, int]] = []

    def marked(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> bool:
        first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
        candidates = {node.lineno, node.lineno - 1, first - 1}
        return any(1 <= n <= len(lines) and LONG_REASON.search(lines[n - 1]) for n in candidates)

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                limit = MAX_CLASS_LINES if isinstance(child, ast.ClassDef) else MAX_FUNCTION_LINES
                length = (child.end_lineno or child.lineno) - child.lineno + 1
                if length > limit and not marked(child):
                    found.append((child.lineno, name, length, limit))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def report(title: str, offenders: list[str]) -> str:
    for line in offenders:
        print(line)
    return f"{len(offenders)} {title}:\n" + "\n".join(offenders)


# -- the rules, on the real source ---------------------------------------------------------


def test_the_rules_see_every_source_file() -> None:
    names = {module_name(path) for path in source_files()}
    assert {"annealbench", "annealbench.schedules", "annealbench.models"} <= names
    assert "annealbench.report.paper" in names


def test_no_module_uses_another_modules_private_names() -> None:
    files = source_files()
    known = {module_name(path) for path in files}
    offenders = [
        f"{path.relative_to(SRC.parents[1])}:{line}: {what}"
        for path in files
        for line, what in private_uses(
            path.read_text(encoding="utf-8"),
            module_name(path),
            known,
            is_package=path.name == "__init__.py",
        )
    ]
    assert not offenders, report("uses of another module's private names", offenders)


def test_no_long_classes_or_functions() -> None:
    offenders = [
        f"{path.relative_to(SRC.parents[1])}:{line}: {name} is {length} lines (max {limit})"
        for path in source_files()
        for line, name, length, limit in long_definitions(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, report(
        "definitions over the limit (split them, or mark one '# long: <reason>')", offenders
    )


# -- the checks themselves ------------------------------------------------------------------

KNOWN = {
    "annealbench",
    "annealbench.data",
    "annealbench.engine",
    "annealbench.methods",
    "annealbench.schedules",
    "annealbench.store",
    "annealbench.study",
}


def test_private_names_are_caught_however_they_are_reached() -> None:
    source = textwrap.dedent(
        """
        import annealbench.store
        from annealbench import data as data_mod
        from annealbench.engine import _build, train
        from . import methods
        from .schedules import _check_rate
        import numpy as np

        def f():
            data_mod._load_cached()
            annealbench.store._connect
            methods.Method._fused
            np._private
            _own_helper()
            data_mod.__version__
            engine._run  # `engine` was never bound to the module here
        """
    )
    found = [what for _, what in private_uses(source, "annealbench.study", KNOWN)]
    assert found == [
        "from annealbench.engine import _build",
        "from annealbench.schedules import _check_rate",
        "data_mod._load_cached (annealbench.data)",
        "annealbench.store._connect (annealbench.store)",
        "methods.Method._fused (annealbench.methods)",
    ]


def test_a_modules_own_private_names_are_its_own() -> None:
    source = "from annealbench import study\nstudy._Driver\n_helper = 1\n"
    assert private_uses(source, "annealbench.study", KNOWN) == []
    # In a package's __init__, `from . import _x` is its own name; `.data` is another module.
    package = "from . import _REGISTRY\nfrom .data import _read\n"
    found = private_uses(package, "annealbench", KNOWN, is_package=True)
    assert [what for _, what in found] == ["from annealbench.data import _read"]


def test_long_definitions_need_a_reason() -> None:
    def function(name: str, body_lines: int, comment: str = "", above: str = "") -> str:
        body = "".join("    x = 1\n" for _ in range(body_lines))
        return f"{above}\ndef {name}():  {comment}\n{body}"

    source = (
        function("fits", MAX_FUNCTION_LINES - 1)
        + function("too_long", MAX_FUNCTION_LINES)
        + function("marked", MAX_FUNCTION_LINES, "# long: one table, read top to bottom")
        + function("marked_above", MAX_FUNCTION_LINES, above="# long: a state machine")
        + function("no_reason", MAX_FUNCTION_LINES, "# long:")
        + "@decorator\n"
        + function("decorated", MAX_FUNCTION_LINES).lstrip("\n")
    )
    found = [(name, length) for _, name, length, _ in long_definitions(source)]
    assert found == [
        ("too_long", MAX_FUNCTION_LINES + 1),
        ("no_reason", MAX_FUNCTION_LINES + 1),
        ("decorated", MAX_FUNCTION_LINES + 1),
    ]
    body = "    x = 1\n" * (MAX_CLASS_LINES - 1)
    assert long_definitions(f"class Fits:\n{body}") == []
    assert long_definitions(f"class Big:\n{body}    y = 2\n") == [
        (1, "Big", MAX_CLASS_LINES + 1, MAX_CLASS_LINES)
    ]
    nested = "class Outer:\n" + textwrap.indent(function("inner", MAX_FUNCTION_LINES), "    ")
    assert [name for _, name, _, _ in long_definitions(nested)] == ["Outer.inner"]


def readme_layout() -> list[str]:
    """The source paths named in the README's Architecture block (``name.py``, ``name/``)."""
    readme = (SRC.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture", 1)[1]
    block = section.split("```", 2)[1]
    return re.findall(r"^([a-z_]+(?:\.py|/))", block, flags=re.M)


def test_the_readme_architecture_names_the_tree_as_it_is() -> None:
    named = set(readme_layout())
    actual = {p.name for p in SRC.glob("*.py") if p.name != "__init__.py"}
    actual |= {f"{p.name}/" for p in SRC.iterdir() if (p / "__init__.py").exists()}
    actual |= {"reference/"} if (SRC / "reference").is_dir() else set()
    assert named - actual == set(), f"README names what does not exist: {named - actual}"
    assert actual - named == set(), f"README leaves out: {actual - named}"
