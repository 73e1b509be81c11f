"""The layering rules, checked on the source: arrows point inward and the server never imports crypto.

cli -> tui -> client -> crypto -> protocol -> core; server -> protocol -> core. The terminal app (tui) sits on the
SDK like the CLI, which starts it: it never imports the CLI or the server. Every `import` statement is
checked, including ones inside functions and under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# The source tree itself, not whatever copy of the package happens to be importable.
SRC = Path(__file__).resolve().parents[2] / "src" / "tokenim"


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement: where it is, how it reads, and the full names it reaches.

    `from a.b import c` reaches `a.b.c` (a submodule or a name defined in `a.b`; either way it
    comes from inside `a.b`), so `from tokenim import crypto` is caught as `tokenim.crypto`.
    """

    line: int
    statement: str
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rule:
    """Modules in `layer` may import only the stdlib and `allowed` (when given), and never `forbidden`."""

    layer: str
    description: str
    forbidden: tuple[str, ...] = ()
    allowed: tuple[str, ...] | None = None

    def applies_to(self, module: str) -> bool:
        return _within(module, (self.layer,))

    def forbids(self, name: str) -> bool:
        if _within(name, self.forbidden):
            return True
        if self.allowed is None or name.split(".")[0] in sys.stdlib_module_names:
            return False
        return not _within(name, self.allowed)


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


RULES = [
    Rule(
        "tokenim.core", "core may import only the stdlib, cryptography and tokenim.core", allowed=("cryptography", "tokenim.core")
    ),
    Rule(
        "tokenim.protocol",
        "protocol may import only the stdlib, pydantic, tokenim.core and tokenim.protocol",
        allowed=("pydantic", "tokenim.core", "tokenim.protocol"),
    ),
    Rule(
        "tokenim.protocol",
        "protocol must not import server, client, crypto or cli",
        forbidden=("tokenim.server", "tokenim.client", "tokenim.crypto", "tokenim.cli"),
    ),
    Rule(
        "tokenim.crypto",
        "crypto must not import server, client or cli",
        forbidden=("tokenim.server", "tokenim.client", "tokenim.cli"),
    ),
    Rule(
        "tokenim.server",
        "server must not import crypto, client, cli or vodozemac",
        forbidden=("tokenim.crypto", "tokenim.client", "tokenim.cli", "vodozemac"),
    ),
    Rule(
        "tokenim.client", "client must not import server, cli or tui", forbidden=("tokenim.server", "tokenim.cli", "tokenim.tui")
    ),
    Rule("tokenim.tui", "tui must not import server or cli", forbidden=("tokenim.server", "tokenim.cli")),
    Rule("tokenim.crypto", "crypto must not import tui", forbidden=("tokenim.tui",)),
    Rule("tokenim.server", "server must not import tui", forbidden=("tokenim.tui",)),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def imports_in(source: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import in `source` (also inside functions and `if TYPE_CHECKING:`), relative ones resolved."""
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.append(Import(node.lineno, ast.unparse(node), tuple(alias.name for alias in node.names)))
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node)
            targets = tuple(base if alias.name == "*" else f"{base}.{alias.name}" for alias in node.names)
            found.append(Import(node.lineno, ast.unparse(node), targets))
    return found


def violations(source: str, module: str, *, is_package: bool = False, where: str = "") -> list[str]:
    """One line per offending import, naming the module, the place, the import and the rule."""
    problems: list[str] = []
    for imp in imports_in(source, module, is_package=is_package):
        for rule in RULES:
            if not rule.applies_to(module):
                continue
            for target in imp.targets:
                if rule.forbids(target):
                    problems.append(
                        f"{module} ({where or module}:{imp.line}) imports {target} (`{imp.statement}`): {rule.description}"
                    )
    return problems


def source_modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.relative_to(SRC).parts)


def test_every_layer_is_scanned() -> None:
    names = {module_name(p) for p in source_modules()}
    for layer in (
        "tokenim.core",
        "tokenim.protocol",
        "tokenim.crypto",
        "tokenim.server",
        "tokenim.client",
        "tokenim.cli",
        "tokenim.tui",
    ):
        assert any(n == layer or n.startswith(layer + ".") for n in names), f"no modules found for {layer}"
    assert "tokenim.core.signing" in names
    assert "tokenim.server.app" in names


def test_layers_only_import_inward() -> None:
    problems: list[str] = []
    for path in source_modules():
        rel = path.relative_to(SRC.parent)
        problems += violations(path.read_text("utf-8"), module_name(path), is_package=path.name == "__init__.py", where=str(rel))
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_migrations_do_not_import_crypto_or_client() -> None:
    # Alembic migrations are part of the server even though they are loaded by path.
    problems: list[str] = []
    for path in sorted((SRC / "server" / "storage" / "migrations").rglob("*.py")):
        problems += violations(path.read_text("utf-8"), "tokenim.server.storage.migrations." + path.stem, where=path.name)
    assert not problems, "\n".join(problems)


# The checker itself must catch what it is meant to catch, or the tests above prove nothing.


@pytest.mark.parametrize(
    ("module", "source", "offender"),
    [
        ("tokenim.core.ids", "import requests\n", "requests"),
        ("tokenim.core.ids", "from pydantic import BaseModel\n", "pydantic"),
        ("tokenim.core.ids", "from tokenim.protocol.keys import parse_master_key\n", "tokenim.protocol.keys"),
        ("tokenim.core.ids", "from tokenim import __version__\n", "tokenim"),
        ("tokenim.core.clock", "def f():\n    import vodozemac\n", "vodozemac"),
        ("tokenim.core.ids", "from ..protocol import keys\n", "tokenim.protocol"),
        ("tokenim.protocol.keys", "import fastapi\n", "fastapi"),
        ("tokenim.protocol.keys", "import vodozemac\n", "vodozemac"),
        ("tokenim.protocol.keys", "from tokenim.crypto.device import DeviceIdentity\n", "tokenim.crypto.device"),
        ("tokenim.protocol.keys", "from tokenim.client.store import ProfileStore\n", "tokenim.client.store"),
        ("tokenim.crypto.device", "from tokenim.client import Client\n", "tokenim.client"),
        ("tokenim.crypto.device", "import tokenim.server.app\n", "tokenim.server.app"),
        ("tokenim.crypto.device", "from tokenim.cli.main import main\n", "tokenim.cli.main"),
        ("tokenim.server.app", "import vodozemac\n", "vodozemac"),
        ("tokenim.server.app", "from vodozemac import Account\n", "vodozemac"),
        ("tokenim.server.app", "from tokenim import crypto\n", "tokenim.crypto"),
        ("tokenim.server.services.keys", "from ...crypto.device import DeviceIdentity\n", "tokenim.crypto.device"),
        (
            "tokenim.server.app",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tokenim.client.sdk import Client\n",
            "tokenim.client.sdk",
        ),
        ("tokenim.client.sdk", "from tokenim.server.config import ServerConfig\n", "tokenim.server.config"),
        ("tokenim.client.sdk", "import tokenim.cli\n", "tokenim.cli"),
        ("tokenim.client.sdk", "from tokenim.tui.app import ChatApp\n", "tokenim.tui.app"),
        ("tokenim.tui.app", "from tokenim.cli.output import clean\n", "tokenim.cli.output"),
        ("tokenim.tui.app", "from tokenim.server.app import build_app\n", "tokenim.server.app"),
        ("tokenim.server.app", "import tokenim.tui\n", "tokenim.tui"),
        ("tokenim.crypto.device", "from tokenim.tui import ChatApp\n", "tokenim.tui"),
    ],
)
def test_checker_reports_the_module_and_the_import(module: str, source: str, offender: str) -> None:
    problems = violations(source, module)
    assert problems, f"{offender} in {module} was not caught"
    assert any(p.startswith(module + " ") and f"imports {offender}" in p for p in problems), problems


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("tokenim.core.signing", "import hashlib\nfrom cryptography.exceptions import InvalidSignature\n"),
        ("tokenim.core.ids", "from tokenim.core.errors import ErrorCode\nfrom . import errors\n"),
        ("tokenim.protocol.api", "from pydantic import BaseModel\nfrom tokenim.core.ids import UserId\n"),
        ("tokenim.crypto.machine", "import vodozemac\nfrom tokenim.protocol.keys import parse_device_keys\n"),
        ("tokenim.server.app", "import sqlalchemy\nfrom tokenim import __version__\nfrom tokenim.protocol import keys\n"),
        ("tokenim.client.sdk", "import httpx\nfrom tokenim.crypto.device import DeviceIdentity\n"),
        ("tokenim.cli.main", "from tokenim.client import Client\n"),
        ("tokenim.cli.chat", "from tokenim.tui import ChatApp\n"),
        (
            "tokenim.tui.app",
            "from textual.app import App\nfrom tokenim.client import Client\nfrom tokenim.core.display import clean\n",
        ),
    ],
)
def test_checker_allows_inward_imports(module: str, source: str) -> None:
    assert violations(source, module) == []
