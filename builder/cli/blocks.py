"""builder-blocks: list every registered block with its typed arguments and ports; with schema=PATH, also
write a JSON Schema of model configs so editors can complete and check YAML.

    builder-blocks
    builder-blocks imports=[my_pkg.blocks]   # with the blocks of your own module
    builder-blocks schema=model.schema.json
"""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from builder.cli import command
from builder.cli.args import take_raw
from builder.errors import ConfigError
from builder.graph import registry
from builder.graph.schema import model_schema


def main(argv: list[str] | None = None) -> None:
    command("builder-blocks", __doc__, _main, argv)


def _main(argv: list[str]) -> None:
    mine, rest = take_raw(argv, ("imports", "schema"))
    if rest:
        raise ConfigError(f"{rest[0]}: unknown argument; builder-blocks takes imports=[...] and schema=PATH")
    imports = [m.strip() for m in mine.get("imports", "").strip("[]").split(",") if m.strip()]
    blocks = registry.registry(imports)
    _print(blocks)
    if "schema" not in mine:
        return  # a listing writes nothing
    if not mine["schema"]:
        raise ConfigError("schema: empty; give the path of the JSON Schema file to write (schema=PATH)")
    path = Path(mine["schema"]).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model_schema(blocks), indent=2) + "\n")
    print(f"JSON Schema of model configs written to {path}")


def _print(blocks: dict) -> None:
    table = Table(title=f"{len(blocks)} registered blocks", title_justify="left", show_lines=False)
    for col in ("block", "ports", "arguments", "description"):
        table.add_column(col, overflow="fold")
    for name in sorted(blocks):
        s = blocks[name]
        ports = ", ".join(p.name + ("" if p.required else "?") for p in s.ports)
        args = "\n".join(a.describe() for a in s.args.values()) or "-"
        table.add_row(name, ports, escape(args), escape(s.doc))
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 140)
    console.print(table)


if __name__ == "__main__":
    main()
