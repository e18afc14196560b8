# appscalefile_lint runs the build of the module for the host's architecture (see
# plugins/plugin_utils/arch.py).
from __future__ import annotations

from ansible_collections.appscale.persist.plugins.plugin_utils.arch import ArchAction


class ActionModule(ArchAction):
    MODULE = "appscalefile_lint"
