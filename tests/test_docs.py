"""docs/guide.md against the code: its layout section against the package tree, its DiPODConfig table against the
fields DiPODConfig adds to GRPOConfig (names and defaults)."""

import dataclasses
import os
import re

from trl import GRPOConfig

from dipod_trl.config import DiPODConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "dipod_trl")
GUIDE = os.path.join(ROOT, "docs", "guide.md")


def guide_section(title: str) -> str:
    with open(GUIDE) as f:
        text = f.read()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def layout_entries() -> dict[str, str]:
    """The layout block's entries: the path that opens each line, with its text and its continuation lines."""
    block = guide_section("Layout").split("```")[1]
    entries, current = {}, None
    for line in block.splitlines():
        if line.startswith("dipod_trl/"):
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif line.startswith(" ") and current is not None:
            entries[current] += " " + line.strip()
    return entries


def modules_of(folder: str) -> list[str]:
    return sorted(name[:-3] for name in os.listdir(folder) if name.endswith(".py") and name != "__init__.py")


def test_the_guide_layout_names_every_package_and_module_of_the_tree():
    entries = layout_entries()
    packages = sorted(name for name in os.listdir(PACKAGE)
                      if os.path.isfile(os.path.join(PACKAGE, name, "__init__.py")))
    for package in packages:
        entry = entries.get(f"dipod_trl/{package}/")
        assert entry is not None, f"docs/guide.md's layout has no line for dipod_trl/{package}/"
        missing = [m for m in modules_of(os.path.join(PACKAGE, package)) if not re.search(rf"\b{m}\b", entry)]
        assert not missing, f"docs/guide.md's layout of dipod_trl/{package}/ does not name {missing}"
    text = " ".join(entries.values())
    missing = [m for m in modules_of(PACKAGE) if f"{m}.py" not in text]
    assert not missing, f"docs/guide.md's layout does not name dipod_trl/{missing}.py"
    # ...and names nothing that is not there: every path and module file it gives exists.
    for path in entries:
        assert os.path.exists(os.path.join(ROOT, path)), f"docs/guide.md's layout names {path}, which does not exist"
    for name in re.findall(r"\b(\w+)\.py\b", text):
        assert os.path.exists(os.path.join(PACKAGE, f"{name}.py")), f"docs/guide.md's layout names {name}.py"


def table_rows() -> list[tuple[list[str], str]]:
    """(field names, default cell) of each row of the guide's DiPODConfig table."""
    rows = []
    for line in guide_section("DiPODConfig").splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 3:
            rows.append((re.findall(r"`(\w+)`", cells[0]), cells[1]))
    return rows


def literal(text: str):
    """A default as the table writes it: `name` a string, None, a number; anything else is prose (ValueError)."""
    text = text.strip()
    if text == "None":
        return None
    if re.fullmatch(r"`[\w.+-]+`", text):
        return text.strip("`")
    return float(text)


def test_the_guide_dipodconfig_table_lists_every_field_dipodconfig_adds_with_its_default():
    grpo = {f.name for f in dataclasses.fields(GRPOConfig)}
    added = {f.name: f.default for f in dataclasses.fields(DiPODConfig) if f.name not in grpo}
    rows = table_rows()
    listed = [name for names, _ in rows for name in names]
    assert sorted(listed) == sorted(added), (
        f"docs/guide.md's DiPODConfig table lacks {sorted(set(added) - set(listed))} and lists "
        f"{sorted(set(listed) - set(added))}, which DiPODConfig does not add")
    for names, cell in rows:
        values = cell.split(", ")
        try:
            documented = [literal(v) for v in values] if len(values) == len(names) else None
        except ValueError:
            documented = None
        if documented is None:  # prose ("per objective"): a default the run decides, None in the dataclass
            assert all(added[name] is None for name in names), (names, cell)
            continue
        for name, value in zip(names, documented):
            default = added[name]
            same = float(default) == value if isinstance(value, float) else default == value
            assert same, (name, default, cell)


def test_the_import_graph_has_no_cycle_and_only_the_entry_point_imports_the_command_layer():
    """What the layout section promises, read from the source by scripts/module_graph.py."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("module_graph", os.path.join(ROOT, "scripts", "module_graph.py"))
    graph = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graph)
    for per_file in (False, True):
        nodes, load, every = graph.graph("dipod_trl", per_file)
        assert graph.strongly_connected(nodes, every) == []
    nodes, _, every = graph.graph("dipod_trl", False)
    importers = sorted(node for node in nodes if "dipod_trl.commands" in every[node])
    assert importers == ["dipod_trl.__main__"]
