"""Where extension code comes from: packages in folders and installed entry points.

Built-ins and user drop-ins live side by side in ``extensions/NAME/`` (hook implementations in
``script.py``, else ``__init__.py``); installed packages declare an entry point in the
``hearth.extensions`` group::

    [project.entry-points."hearth.extensions"]
    my_extension = "my_package.hearth_extension"

Nothing is imported here until an extension is enabled: a broken drop-in costs nothing while it is off.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from webui.config import ROOT
from webui.safe_files import path_inside

log = logging.getLogger(__name__)

EXTENSIONS_DIR = ROOT / "extensions"
ENTRY_POINT_GROUP = "hearth.extensions"


@dataclass(frozen=True)
class Source:
    """One extension that can be enabled: its name, where it comes from (for messages), its importer."""

    name: str
    origin: str
    load: Callable[[], object]


def _load_folder_extension(folder: Path, name: str) -> object:
    directory = path_inside(folder, name, what="extension")  # names are discovered, but never trusted
    script = directory / "script.py"
    if folder.resolve() == EXTENSIONS_DIR.resolve():  # the shipped package: import it properly
        package = importlib.import_module(f"extensions.{name}")
        return importlib.import_module(f"extensions.{name}.script") if script.is_file() else package
    entry = script if script.is_file() else directory / "__init__.py"
    spec = importlib.util.spec_from_file_location(f"hearth_extension_{name}", entry,
                                                  submodule_search_locations=[str(directory)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # before running it, so its own relative imports resolve
    spec.loader.exec_module(module)
    return module


def discover(folders: Sequence[Path] = (EXTENSIONS_DIR,), entry_points: bool = True) -> dict[str, Source]:
    """Every extension that could be enabled, by name (folders first; a name is taken once)."""
    sources: dict[str, Source] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        for directory in sorted(folder.iterdir()):
            name = directory.name
            has_code = (directory / "script.py").is_file() or (directory / "__init__.py").is_file()
            if directory.is_dir() and has_code and name.isidentifier() and not name.startswith("_"):
                sources.setdefault(name, Source(name, str(directory), partial(_load_folder_extension, folder, name)))
    if entry_points:
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in sources:
                log.warning("extension %r from %s is shadowed by %s", ep.name, ep.value, sources[ep.name].origin)
                continue
            sources[ep.name] = Source(ep.name, f"entry point {ep.value}", ep.load)
    return sources
