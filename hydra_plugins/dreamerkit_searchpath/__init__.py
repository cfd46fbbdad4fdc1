"""Hydra search-path plug-in: adds the ``conf/`` folders of installed dreamerkit plug-ins."""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

from registry.plugins import plugin_conf_dirs


class DreamerkitPluginSearchPath(SearchPathPlugin):
    """Appends each plug-in package's ``conf/`` so its YAML options join the config groups."""

    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        for path in plugin_conf_dirs():
            search_path.append(provider="dreamerkit-plugin", path=path)
