#!/usr/bin/env python3
"""Generates the values table in charts/keymint/README.md from values.yaml.

The comment lines directly above a key in values.yaml are its description;
the type comes from values.schema.json; the default is the value as written.
The table goes between the markers

    <!-- values-table:start -->
    <!-- values-table:end -->

Usage:
    scripts/chart-docs.py          rewrite the table in README.md
    scripts/chart-docs.py --check  exit 1 if README.md is stale, a key has no
                                   comment, or a key is missing from the schema

Standard library only. values.yaml must stay in the plain subset this reads:
`key: value` lines, nested maps by indentation, lists of scalars as `- item`
lines or inline `[]`/`{}`, comments on their own lines.
"""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "keymint"
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
README = CHART / "README.md"
START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?: +(?P<value>.*))?$")
ITEM = re.compile(r"^(?P<indent> *)- +(?P<value>.*)$")
COMMENT = re.compile(r"^(?P<indent> *)#(?: (?P<text>.*))?$")


class Entry:
    def __init__(self, path, description, line):
        self.path = path
        self.description = description
        self.line = line
        self.value = None  # text of a scalar or inline value
        self.items = []  # `- item` lines below the key
        self.children = False


def parse(text):
    """Every key in values.yaml, in file order, with its comment block."""
    entries = []
    stack = []  # (indent, entry)
    comment = []
    comment_indent = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not line.strip():
            comment, comment_indent = [], None
            continue
        match = COMMENT.match(line)
        if match:
            if comment_indent is not None and len(match["indent"]) != comment_indent:
                comment = []
            comment_indent = len(match["indent"])
            comment.append((match["text"] or "").strip())
            continue
        match = ITEM.match(line)
        if match:
            if not stack:
                raise SystemExit(f"values.yaml:{number}: a list item outside any key")
            stack[-1][1].items.append(match["value"].strip())
            comment, comment_indent = [], None
            continue
        match = KEY.match(line)
        if not match:
            raise SystemExit(f"values.yaml:{number}: not in the subset chart-docs.py reads: {line!r}")
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if stack:
            stack[-1][1].children = True
        path = f"{stack[-1][1].path}.{match['key']}" if stack else match["key"]
        description = " ".join(part for part in comment if part) if comment_indent == indent else ""
        entry = Entry(path, description, number)
        entry.value = (match["value"] or "").strip() or None
        entries.append(entry)
        stack.append((indent, entry))
        comment, comment_indent = [], None
    return entries


def schema_node(schema, path):
    """The schema of the value at a dotted path, following $refs; None if absent."""
    node = schema
    for key in path.split("."):
        node = resolve(schema, node)
        properties = node.get("properties", {})
        if key in properties:
            node = properties[key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            return None
    return resolve(schema, node)


def resolve(schema, node):
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["definitions"][name]
    return node


def type_of(node):
    if node is None:
        return ""
    if "oneOf" in node:
        return " or ".join(type_of(option) for option in node["oneOf"])
    kind = node.get("type", "")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array":
        item = resolve_items(node)
        return f"list of {item}" if item else "list"
    if "enum" in node:
        kind += " (" + ", ".join(f"`{value}`" for value in node["enum"]) + ")"
    return kind


def resolve_items(node):
    items = node.get("items", {})
    kind = items.get("type")
    if kind:
        return kind if isinstance(kind, str) else " or ".join(kind)
    if "$ref" in items:
        return items["$ref"].rsplit("/", 1)[-1]
    return ""


def default_of(entry):
    if entry.items:
        return "[" + ", ".join(entry.items) + "]"
    return entry.value or ""


def escape(text):
    return text.replace("|", "\\|")


def table(entries, schema):
    rows = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for entry in entries:
        if entry.children:
            continue
        default = default_of(entry)
        rows.append(
            "| `{}` | {} | {} | {} |".format(
                entry.path,
                escape(type_of(schema_node(schema, entry.path))),
                f"`{escape(default)}`" if default else "",
                escape(entry.description),
            )
        )
    return "\n".join(rows) + "\n"


def problems(entries, schema):
    found = []
    for entry in entries:
        if not entry.description:
            found.append(f"values.yaml:{entry.line}: `{entry.path}` has no comment")
        if schema_node(schema, entry.path) is None:
            found.append(f"values.yaml:{entry.line}: `{entry.path}` is not in values.schema.json")
    return found


def render_readme(readme, generated):
    if START not in readme or END not in readme:
        raise SystemExit(f"{README}: the markers {START} and {END} are missing")
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{generated}{END}{tail}"


def main(argv):
    check = "--check" in argv[1:]
    entries = parse(VALUES.read_text())
    schema = json.loads(SCHEMA.read_text())
    found = problems(entries, schema)
    readme = README.read_text()
    wanted = render_readme(readme, table(entries, schema))
    if check:
        if wanted != readme:
            found.append(f"{README.relative_to(ROOT)}: the values table is stale; run scripts/chart-docs.py")
        for problem in found:
            print(problem, file=sys.stderr)
        return 1 if found else 0
    for problem in found:
        print(problem, file=sys.stderr)
    if wanted != readme:
        README.write_text(wanted)
        print(f"updated {README.relative_to(ROOT)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
