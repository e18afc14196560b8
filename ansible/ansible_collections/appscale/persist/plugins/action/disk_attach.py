# disk_attach with state: attached runs the disk_attach module, with state:
# detached the disk_detach module (see plugins/plugin_utils/state.py).
from __future__ import annotations

from ansible_collections.appscale.persist.plugins.plugin_utils.state import StateAction


class ActionModule(StateAction):
    STATES = {"attached": "disk_attach", "detached": "disk_detach"}
    DEFAULT = "attached"
