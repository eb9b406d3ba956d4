"""A Griffe extension (mkdocs.yml) that renders the project's docstring conventions.

The docstrings are Google style with Markdown, as LangChain's integration packages write them.
Three conventions need help to render well; the source is not changed:

- Sphinx roles (``:class:`~infinity_rag.InfinityClient```, ``:meth:`embed```) become
  autorefs cross-references (``[`InfinityClient`][infinity_rag.InfinityClient]``),
  resolved from the docstring's own scope (``scoped_crossrefs``): a role naming something
  the reference does not document fails ``mkdocs build --strict``. A role naming a private
  object (a part of its path starts with ``_``) becomes plain code: private objects have no
  entry.
- "Key init args" blocks (``name: type`` with the description indented below it, or
  ``name: description``) become a list of the arguments in an admonition; any other titled
  block whose title Griffe does not read as an admonition (``Embed images (CLIP-style):``)
  becomes one, as ``Setup:`` or ``Instantiate:`` do.
- An attribute without a docstring takes the ``#:`` comment above it (Sphinx's convention,
  used in errors.py), or a pydantic field its ``Field(description=...)`` (LlamaIndex's
  convention), so the reference shows it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|attr|exc|data|obj|const):`(?P<target>[^`]+)`")
# Section titles Griffe's Google parser knows; their blocks are left alone.
_SECTIONS = {
    "args", "arguments", "params", "parameters", "keyword args", "keyword arguments",
    "other args", "other arguments", "other params", "other parameters", "raises",
    "exceptions", "returns", "yields", "receives", "examples", "attributes", "functions",
    "methods", "classes", "modules", "warns", "warnings", "type aliases", "type parameters",
}  # fmt: skip
# What Griffe itself reads as an admonition title (``Setup:``, ``Embed single text:``).
_GRIFFE_ADMONITION = re.compile(r"^[\w][\s\w-]*$")
_TITLE = re.compile(r"^(?P<title>[A-Z][^`:]*?):\s*$")
# A type annotation as LangChain's "Key init args" write it after the name: ``int | None``.
_TYPE = re.compile(r"^[A-Za-z_][\w.]*(\[.*\])?( \| [A-Za-z_][\w.]*(\[.*\])?)*$")


def _role_to_link(match: re.Match[str]) -> str:
    target = match["target"]
    path = target.lstrip("~").removesuffix("()")
    shown = path.rsplit(".", 1)[-1] if target.startswith("~") else path
    if any(part.startswith("_") and not part.endswith("__") for part in path.split(".")):
        return f"`{shown}`"
    return f"[`{shown}`][{path}]"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _init_args(body: list[str]) -> list[str]:
    """The lines of a "Key init args" block as a Markdown list, one item per argument."""
    base = min(_indent(line) for line in body if line.strip())
    items: list[list[str]] = []
    for line in body:
        if not line.strip():
            continue
        if _indent(line) == base or not items:
            items.append([line.strip()])
        else:
            items[-1].append(line.strip())
    out = []
    for head, *rest in items:
        text = " ".join([head, *rest])
        names, sep, description = text.partition(": ")
        if not sep:
            out.append(f"- {text}")
            continue
        first = head.partition(": ")[2]
        if rest and _TYPE.match(first):  # LangChain's "name: type" + description below
            description = f"`{first}` — " + " ".join(rest)
        shown = " / ".join(f"`{name.strip()}`" for name in names.split("/"))
        out.append(f"- {shown}: {description}")
    return out


def convert(text: str) -> str:
    """``text`` (a docstring) with the conventions above written as Markdown."""
    text = _ROLE.sub(_role_to_link, text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    fence = False
    while i < len(lines):
        line = lines[i]
        if line.lstrip().startswith("```"):
            fence = not fence
        match = None if fence or _indent(line) else _TITLE.match(line)
        title = match["title"] if match else ""
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > 0):
            j += 1
        body = lines[i + 1 : j]
        while body and not body[-1].strip():
            body.pop()
        known = title.lower() in _SECTIONS or _GRIFFE_ADMONITION.match(title)
        if not match or not body or (known and not title.startswith("Key init args")):
            out.append(line)
            i += 1
            continue
        if title.startswith("Key init args"):
            content = _init_args(body)
        else:
            width = min(_indent(b) for b in body if b.strip())
            content = [b[width:] for b in body]
        quoted = title.replace('"', "'")
        out.append(f'!!! note "{quoted}"')
        out.extend(f"    {c}" if c.strip() else "" for c in content)
        out.append("")
        i = j
    return "\n".join(out)


def _field_description(node: ast.AST | griffe.ObjectNode) -> str | None:
    """``description=`` of a ``name: T = Field(..., description="...")`` assignment."""
    value = getattr(node, "value", None)
    if not isinstance(value, ast.Call):
        return None
    func = value.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    if name != "Field":
        return None
    for keyword in value.keywords:
        if keyword.arg == "description" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return None


def _comment_above(attr: griffe.Attribute) -> str | None:
    """The ``#:`` comment lines right above the attribute's first line, joined."""
    collection = attr.lines_collection  # a LinesCollection: no .get()
    path = attr.filepath
    if attr.lineno is None or not isinstance(path, Path) or path not in collection:
        return None
    lines = collection[path]
    comment: list[str] = []
    index = attr.lineno - 2  # the line above, 0-based
    while index >= 0 and lines[index].strip().startswith("#:"):
        comment.insert(0, lines[index].strip().removeprefix("#:").strip())
        index -= 1
    return " ".join(comment) or None


class ProjectDocstrings(griffe.Extension):
    """Applies :func:`convert` to every docstring, and field descriptions to fields."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)

    def on_attribute_instance(
        self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute, **kwargs: Any
    ) -> None:
        if attr.docstring is not None:
            return
        description = _comment_above(attr) or _field_description(node)
        if description:
            attr.docstring = griffe.Docstring(description, parent=attr)
