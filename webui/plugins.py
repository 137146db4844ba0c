"""Hearth's public plugin contract (pluggy hookspecs) and the plugin manager that holds them.

Every hook below is part of the documented API: its docstring says when Hearth calls it and what it
must return. A plugin is any module or object with functions decorated by ``@hookimpl`` named after
a hook.

Third-party loaders are installed packages that declare an entry point in the ``hearth.loaders``
group, for example in their pyproject.toml::

    [project.entry-points."hearth.loaders"]
    my_backend = "my_package.hearth_plugin"

where ``my_package/hearth_plugin.py`` implements ``hearth_loaders``.
"""

from __future__ import annotations

import logging

import pluggy

from webui.loader_api import Loader

PROJECT = "hearth"
LOADER_ENTRY_POINT_GROUP = "hearth.loaders"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

log = logging.getLogger(__name__)


class LoaderSpecs:
    """Hooks a backend plugin implements."""

    @hookspec
    def hearth_loaders(self) -> list[type[Loader]]:
        """Called once when the app starts, to collect model loaders.

        Return a list of `webui.loader_api.Loader` subclasses. Each declares a unique ``name``, the
        paths it can load (``score``), its parameters (``params``) and ``load``. Results of all plugins
        are concatenated; a later plugin may not reuse an earlier name (it is reported and skipped).
        """


BUILTIN_LOADER_MODULES = (
    "loaders.llamacpp",
    "loaders.llamacpp_hf",
    "loaders.transformers_loader",
    "loaders.exllamav2",
)


def make_plugin_manager(load_entry_points: bool = True) -> pluggy.PluginManager:
    """A plugin manager with Hearth's hookspecs, the built-in loaders and installed plugins."""
    import importlib

    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(LoaderSpecs)
    for module_name in BUILTIN_LOADER_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        pm.register(module, name=module_name)
    if load_entry_points:
        pm.load_setuptools_entrypoints(LOADER_ENTRY_POINT_GROUP)
    return pm


def collect_loaders(pm: pluggy.PluginManager) -> dict[str, type[Loader]]:
    """All loader classes by name, in registration order (built-ins first)."""
    loaders: dict[str, type[Loader]] = {}
    for batch in reversed(pm.hook.hearth_loaders()):
        for cls in batch:
            if cls.name in loaders:
                log.warning("loader name %r is already taken; skipping %s", cls.name, cls)
                continue
            loaders[cls.name] = cls
    return loaders
