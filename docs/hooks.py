"""MkDocs hooks for the API reference site (mkdocs.yml: ``hooks: [docs/hooks.py]``).

- The home page is README.md and the changelog page CHANGELOG.md, as they are in the
  repository (one text each, no copy under docs/).
- Links are rewritten for the site, so that each page's links work both on GitHub and on the
  site: a link into docs/ becomes a link to that page, a link to another file of the
  repository (``../benchmarks/RESULTS.md``) becomes a link to it on GitHub. A link to a file
  that does not exist is a warning, so ``--strict`` fails.
- ``<!-- public-names infinity_rag -->`` in a page becomes a ``::: infinity_rag.NAME`` block
  for each name in ``infinity_rag.__all__`` that no other reference page documents
  (``infinity_rag.types``, ``infinity_rag.errors``): a new top-level public name appears
  without editing the docs.
- After the build, every public name of the documented modules (their ``__all__``) must have
  a heading in the reference: one without is a warning (so ``--strict`` fails).

Names are read from the source with :mod:`ast`: nothing is imported.
"""

from __future__ import annotations

import ast
import logging
import os
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

log = logging.getLogger("mkdocs.hooks.infinity_rag")

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
#: Site pages that are repository files, and the files.
MIRRORED = {"index.md": "README.md", "changelog.md": "CHANGELOG.md"}
#: The modules whose public names the reference documents (each has its own page or block).
DOCUMENTED_MODULES = (
    "infinity_rag",
    "infinity_rag.types",
    "infinity_rag.errors",
    "infinity_rag.langchain",
    "infinity_rag.llama_index",
    "infinity_rag.haystack",
    "infinity_rag.ray",
    "infinity_rag.testing",
)
#: Modules with a page of their own, whose names the ``public-names`` marker leaves out.
OWN_PAGE_MODULES = ("infinity_rag.types", "infinity_rag.errors")

_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
_MARKER = re.compile(r"^<!-- public-names (?P<module>[\w.]+) -->$", re.MULTILINE)
_HEADING_ID = re.compile(r'id="(infinity_rag[\w.]*)"')


def public_names(module: str) -> list[str]:
    """``module.__all__`` as written in its source, without dunder names such as __version__:
    a list, then any ``__all__ += submodule.__all__`` (``from package import submodule``)."""
    parts = module.split(".")
    package = SRC.joinpath(*parts)
    path = package / "__init__.py" if package.is_dir() else package.with_suffix(".py")
    names: list[str] | None = None
    imported: dict[str, str] = {}  # a name bound by `from package import submodule`: its module
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            imported.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            names = list(ast.literal_eval(node.value))
        elif (
            isinstance(node, ast.AugAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "__all__"
            and names is not None
        ):
            value = node.value
            if not (
                isinstance(value, ast.Attribute)
                and value.attr == "__all__"
                and isinstance(value.value, ast.Name)
                and value.value.id in imported
            ):
                raise ValueError(f"{path}: __all__ += takes an imported submodule's __all__")
            names += public_names(imported[value.value.id])
    if names is None:
        raise ValueError(f"{path} has no __all__")
    return [n for n in names if not (n.startswith("__") and n.endswith("__"))]


def _site_link(target: str, repo_file: str, page_uri: str, repo_url: str) -> str:
    """``target``, a link written in ``repo_file``, as the site page ``page_uri`` needs it."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
        return target  # absolute URL, mailto:, or an anchor on the same page
    path, _, anchor = target.partition("#")
    anchor = f"#{anchor}" if anchor else ""
    resolved = (ROOT / repo_file).parent.joinpath(path).resolve()
    if not resolved.exists():
        log.warning("%s links to %s, which does not exist", repo_file, target)
        return target
    docs = ROOT / "docs"
    page_dir = docs.joinpath(page_uri).parent
    mirrored_as = {ROOT / file: docs / page for page, file in MIRRORED.items()}
    if resolved in mirrored_as:  # README.md, CHANGELOG.md: their pages on the site
        return Path(os.path.relpath(mirrored_as[resolved], page_dir)).as_posix() + anchor
    if resolved.is_relative_to(docs) and resolved.suffix == ".md":
        return Path(os.path.relpath(resolved, page_dir)).as_posix() + anchor
    kind = "tree" if resolved.is_dir() else "blob"
    relative = resolved.relative_to(ROOT).as_posix()
    return f"{repo_url.rstrip('/')}/{kind}/main/{relative}{anchor}"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for page, repo_file in MIRRORED.items():
        if files.get_file_from_path(page) is not None:
            log.warning("docs/%s exists: the page is generated from %s", page, repo_file)
            continue
        content = (ROOT / repo_file).read_text(encoding="utf-8")
        files.append(File.generated(config, page, content=content))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    def blocks(match: re.Match[str]) -> str:
        module = match["module"]
        elsewhere = {n for m in OWN_PAGE_MODULES for n in public_names(m)}
        names = [n for n in public_names(module) if n not in elsewhere]
        # Members a class inherits are its own to a reader (InfinityClient's embedding
        # methods live in a base class of their own module).
        options = "\n    options:\n      inherited_members: true"
        return "\n\n".join(f"::: {module}.{name}{options}" for name in names)

    repo_file = MIRRORED.get(page.file.src_uri, f"docs/{page.file.src_uri}")
    repo_url = config.repo_url or ""
    uri = page.file.src_uri
    markdown = _LINK.sub(
        lambda m: m[1] + _site_link(m[2], repo_file, uri, repo_url) + m[3], markdown
    )
    return _MARKER.sub(blocks, markdown)


def on_post_build(config: MkDocsConfig, **kwargs: Any) -> None:
    documented: set[str] = set()
    for html in Path(config.site_dir, "reference").rglob("*.html"):
        documented.update(_HEADING_ID.findall(html.read_text(encoding="utf-8")))
    for module in DOCUMENTED_MODULES:
        for name in public_names(module):
            # A name re-exported by a package may be documented under the path of the module
            # that defines it (infinity_rag.EmbeddingResult as infinity_rag.types....).
            if not any(
                i == f"{module}.{name}" or (i.startswith(f"{module}.") and i.endswith(f".{name}"))
                for i in documented
            ):
                log.warning(
                    "%s.%s is public (in __all__) but has no entry in the API reference",
                    module,
                    name,
                )
