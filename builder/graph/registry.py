"""The block registry: block names -> typed argument schemas and the Python objects behind them.

Every block's schema is read from its source with `ast`: built-ins by scanning `blocks/*.py`, so a config is
checked against every schema without importing torch (the objects are imported only when a model is built),
user blocks from their own source when the decorator registers them, from modules a config names under
`imports:` or from installed packages through the `builder.blocks` entry-point group.
"""
from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ENTRY_POINT_GROUP = "builder.blocks"
BUILTIN_PACKAGE = "blocks"
BUILTIN_DIR = Path(__file__).resolve().parents[2] / BUILTIN_PACKAGE

# Node keys with a meaning of their own; no block may use them as an argument or port name.
RESERVED = ("block", "in", "tie", "unused", "init", "repeat", "body", "input", "out")


@dataclass(frozen=True)
class Arg:
    name: str
    type: str  # "int", "float", "bool", "str", "int | None", "list[int]", "Literal['a', 'b']", "Any"
    default: Any = None
    required: bool = True

    def describe(self) -> str:
        return f"{self.name}: {self.type}" + ("" if self.required else f" = {self.default!r}")


@dataclass(frozen=True)
class Port:
    name: str
    required: bool = True


@dataclass
class BlockSchema:
    name: str
    module: str  # the Python module that defines the block
    qualname: str
    args: dict[str, Arg] = field(default_factory=dict)
    ports: list[Port] = field(default_factory=list)
    doc: str = ""
    stateful: bool = False  # forward takes `state` (incremental decoding)
    obj: Any = None  # the class or function, once imported
    traits: dict[str, Any] = field(default_factory=dict)  # what the block is: positions, vocabulary, attention

    def load(self) -> Any:
        if self.obj is None:
            importlib.import_module(self.module)  # the decorator registers the imported object
            self.obj = _REGISTRY[self.name].obj
            if self.obj is None:
                raise RegistryError(f"block '{self.name}': module {self.module} did not register it on import")
        return self.obj


_REGISTRY: dict[str, BlockSchema] = {}
_builtins_scanned = False
_entry_points_loaded = False


class RegistryError(Exception):
    pass


# ---------------------------------------------------------------- reading a block's schema from its source

def block(name: str, **traits: Any) -> Callable[[Any], Any]:
    """Register a class (an nn.Module) or a function as block `name`.

    Arguments are the keyword parameters of `__init__` (classes) or the keyword-only parameters
    (functions), with type annotations and defaults; ports are the parameters of `forward` (classes)
    or the positional parameters (functions). A parameter named `state` receives the decoding state.
    `traits` tell tasks and commands what the block is, whatever the node is called (builder/contract.py):
    positions="max_len" (the argument bounding the positions of its input), vocabulary="num_embeddings"
    (the table its input ids index, or the classes it predicts), attention=("x", "kv") (its query and key
    ports; attention weights can be captured).
    """
    def register(obj: Any) -> Any:
        _scan_builtins()  # a user block may not silently take a built-in's name
        try:
            source = textwrap.dedent(inspect.getsource(obj))
        except (OSError, TypeError):
            raise RegistryError(f"block '{name}': its source cannot be read; define blocks in a module file") from None
        schema = _schema_from_ast(name, ast.parse(source).body[0], obj.__module__, traits)
        old = _REGISTRY.get(name)
        if old is not None and (old.module, old.qualname) != (schema.module, obj.__qualname__):
            raise RegistryError(f"block '{name}' is registered twice: {old.module}.{old.qualname} "
                                f"and {schema.module}.{obj.__qualname__}")
        schema.qualname, schema.obj = obj.__qualname__, obj
        _REGISTRY[name] = schema
        return obj
    return register


def _normalise_type(text: str) -> str:
    return text.replace('"', "'").replace("typing.", "")


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return ast.unparse(node)


def _params_of(fn: ast.FunctionDef, skip_self: bool) -> list[tuple[str, str, Any, bool, bool]]:
    """(name, type, default, required, keyword_only) for each named parameter."""
    a = fn.args
    positional = a.posonlyargs + a.args
    if skip_self:
        positional = positional[1:]
    defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    out = []
    for arg, default in zip(positional, defaults):
        ann = _normalise_type(ast.unparse(arg.annotation)) if arg.annotation is not None else "Any"
        out.append((arg.arg, ann, None if default is None else _literal(default), default is None, False))
    for arg, default in zip(a.kwonlyargs, a.kw_defaults):
        ann = _normalise_type(ast.unparse(arg.annotation)) if arg.annotation is not None else "Any"
        out.append((arg.arg, ann, None if default is None else _literal(default), default is None, True))
    return out


def _schema_from_ast(name: str, node: ast.AST, module: str, traits: dict[str, Any]) -> BlockSchema:
    """The schema of a block class or function, from its syntax tree: one reading for built-ins (scanned
    without importing them) and user blocks (read from their source when they register)."""
    if isinstance(node, ast.ClassDef):
        methods = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
        init = _params_of(methods["__init__"], True) if "__init__" in methods else []
        if "forward" not in methods:
            raise RegistryError(f"block '{name}': class {node.name} has no forward method")
        fwd = _params_of(methods["forward"], True)
    elif isinstance(node, ast.FunctionDef):
        params = _params_of(node, False)
        init, fwd = [p for p in params if p[4]], [p for p in params if not p[4]]
    else:
        raise RegistryError(f"block '{name}': only classes and functions can be blocks")
    args = {n: Arg(n, t, d, r) for n, t, d, r, _ in init if not n.startswith("*")}
    ports = [Port(n, r) for n, _, _, r, _ in fwd if n != "state"]
    clash = [n for n in list(args) + [p.name for p in ports] if n in RESERVED] + [p.name for p in ports if p.name in args]
    if clash:
        raise RegistryError(f"block '{name}': parameter name(s) {clash} clash with node keys or with each other")
    doc = (ast.get_docstring(node) or "").split("\n\n")[0].replace("\n", " ")
    return BlockSchema(name, module, node.name, args, ports, doc, any(p[0] == "state" for p in fwd),
                       traits=dict(traits))


def _scan_file(path: Path, module: str) -> list[BlockSchema]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in tree.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        for d in node.decorator_list:
            if (isinstance(d, ast.Call) and getattr(d.func, "id", getattr(d.func, "attr", None)) == "block"
                    and d.args and isinstance(d.args[0], ast.Constant)):
                traits = {k.arg: ast.literal_eval(k.value) for k in d.keywords if k.arg}
                found.append(_schema_from_ast(d.args[0].value, node, module, traits))
    return found


def _scan_builtins() -> None:
    global _builtins_scanned
    if _builtins_scanned:
        return
    _builtins_scanned = True
    for path in sorted(BUILTIN_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        for schema in _scan_file(path, f"{BUILTIN_PACKAGE}.{path.stem}"):
            _REGISTRY.setdefault(schema.name, schema)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        ep.load()  # importing the module registers its blocks


def import_block_modules(modules: list[str] | tuple[str, ...]) -> None:
    """Import the modules a config names under `imports:`; each registers its blocks on import."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise RegistryError(f"imports: cannot import block module '{name}': {e}") from None


def registry(user_modules: list[str] | tuple[str, ...] = ()) -> dict[str, BlockSchema]:
    """All registered blocks: built-ins, entry points, and the given user modules."""
    _scan_builtins()
    _load_entry_points()
    import_block_modules(user_modules)
    return _REGISTRY


def get(name: str) -> BlockSchema:
    return registry()[name]
