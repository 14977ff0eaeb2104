"""Griffe extension for the documentation site: read squid-mesh's docstrings as they are written.

It only changes how the docstrings are *read* for the site (nothing in ``src`` is touched):

- ``Example:`` (the project's spelling) is read as the Google ``Examples:`` section, so its
  ``>>>`` lines render as Python code instead of nested block quotes;
- a doctest block outside such a section (``>>>`` lines and their output, up to a blank line) is
  wrapped in a ``pycon`` code fence, without its ``# doctest:`` flags;
- Sphinx roles (``:class:`~squid_mesh.Mesh```, ``:meth:`stop```, ...) become links when their
  target is a documented object of the public API, and inline code otherwise;
- the coroutine attributes of ``AsyncMesh`` (``start = _Offloaded(Mesh.start)``) get the docstring
  they carry at runtime.

Loaded by mkdocstrings (``extensions:`` in ``mkdocs.yml``); excluded from the built site.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|meth|func|mod|data|attr|exc|obj):`(~?)([A-Za-z_][\w.]*)`")
_EXAMPLE_TITLE = re.compile(r"^Example:\s*$")
_SECTION_TITLE = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")
_DOCTEST_FLAG = re.compile(r"\s*#\s*doctest:.*$")
_OFFLOADED = re.compile(r"^_Offloaded\(Mesh\.(\w+)\)$")

# Modules documented on their own pages, with the members shown there (see docs/reference/);
# None: the module's ``__all__``, as the page shows it with ``filters: public``.
_PAGES: dict[str, tuple[str, ...] | None] = {
    "squid_mesh.aio": ("AsyncMesh",),
    "squid_mesh.web": None,
    "squid_mesh.http": ("request", "get", "post", "retry_after"),
    "squid_mesh.testing": None,
}


class SquidDocstrings(griffe.Extension):
    """Rewrite the docstrings of the whole package once it is loaded."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Once ``squid_mesh`` and its submodules are loaded, rewrite every docstring in it."""
        if pkg.path != "squid_mesh":
            return
        public = self._public(pkg)
        seen: set[str] = set()
        self._walk(pkg, public, seen)

    # -- which identifiers have an anchor on the site -------------------------------------------

    def _public(self, pkg: griffe.Module) -> dict[str, str]:
        """Canonical path -> documented (public) path, for objects and their direct members."""
        documented: list[tuple[str, griffe.Object | griffe.Alias]] = []
        for name in sorted(str(export) for export in pkg.exports or ()):
            if name in pkg.members:
                documented.append((f"squid_mesh.{name}", pkg.members[name]))
        for module, listed in _PAGES.items():
            mod = _get(pkg, module)
            if mod is None:
                continue
            names = listed if listed is not None else [str(e) for e in mod.exports or ()]
            for name in names:
                if name in mod.members:
                    documented.append((f"{module}.{name}", mod.members[name]))
        public: dict[str, str] = {}
        for path, obj in documented:
            try:
                target = obj.final_target if obj.is_alias else obj  # type: ignore[union-attr]
            except Exception:  # an unresolvable alias: leave it out
                continue
            public[target.path] = path
            public[path] = path
            if target.is_class:
                for member in target.members:
                    if not member.startswith("_"):
                        public[f"{target.path}.{member}"] = f"{path}.{member}"
                        public[f"{path}.{member}"] = f"{path}.{member}"
        return public

    # -- the rewrite ----------------------------------------------------------------------------

    def _walk(self, obj: griffe.Object, public: dict[str, str], seen: set[str]) -> None:
        if obj.path in seen:
            return
        seen.add(obj.path)
        self._offloaded(obj)
        if obj.docstring is not None:
            text = _fence_doctests(obj.docstring.value)
            obj.docstring.value = _ROLE.sub(lambda m: _role(m, obj, public), text)
        for member in list(obj.members.values()):
            if member.is_alias:
                continue
            self._walk(member, public, seen)  # type: ignore[arg-type]

    @staticmethod
    def _offloaded(obj: griffe.Object) -> None:
        if (
            obj.is_attribute
            and obj.docstring is None
            and obj.parent is not None
            and obj.parent.path == "squid_mesh.aio.AsyncMesh"
        ):
            match = _OFFLOADED.match(str(obj.value or ""))  # type: ignore[attr-defined]
            if match:
                name = match.group(1)
                obj.docstring = griffe.Docstring(
                    f"Awaitable [`Mesh.{name}`][squid_mesh.Mesh.{name}], run in a worker thread.",
                    parent=obj,
                )


def _get(pkg: griffe.Module, dotted: str) -> griffe.Object | None:
    obj: Any = pkg
    for part in dotted.split(".")[1:]:
        if part not in obj.members:
            return None
        obj = obj.members[part]
    return obj  # type: ignore[no-any-return]


def _role(match: re.Match[str], obj: griffe.Object, public: dict[str, str]) -> str:
    short, target = match.group(1) == "~", match.group(2)
    label = target.rsplit(".", 1)[-1] if short else target
    module = obj.module.path if obj.module is not None else ""
    enclosing = obj if obj.is_class else obj.parent
    candidates = [target, f"squid_mesh.{target}", f"{module}.{target}"]
    if enclosing is not None and enclosing.is_class:
        candidates.append(f"{enclosing.path}.{target}")
    for candidate in candidates:
        if candidate in public:
            return f"[`{label}`][{public[candidate]}]"
    return f"`{label}`"


def _fence_doctests(text: str) -> str:
    """``Example:`` -> ``Examples:``; doctest blocks outside that section -> ``pycon`` fences."""
    out: list[str] = []
    in_examples = False
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if _EXAMPLE_TITLE.match(line):
            out.append("Examples:")
            in_examples = True
            i += 1
            continue
        if line and not line[0].isspace():
            # A line at the left margin ends a section (or starts another one).
            in_examples = line.startswith("Examples:") and _SECTION_TITLE.match(line) is not None
        if not in_examples and line.lstrip().startswith(">>>"):
            indent = line[: len(line) - len(line.lstrip())]
            block: list[str] = []
            while i < len(lines) and lines[i].strip():
                block.append(_DOCTEST_FLAG.sub("", lines[i][len(indent) :]))
                i += 1
            out.extend([f"{indent}```pycon", *(f"{indent}{b}" for b in block), f"{indent}```"])
            continue
        out.append(line)
        i += 1
    return "\n".join(out)
