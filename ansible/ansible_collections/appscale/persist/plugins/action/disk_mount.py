# disk_mount with state: mounted runs the disk_mount module, with state:
# unmounted the disk_unmount module (see plugins/plugin_utils/state.py).
from __future__ import annotations

from ansible_collections.appscale.persist.plugins.plugin_utils.state import StateAction


class ActionModule(StateAction):
    STATES = {"mounted": "disk_mount", "unmounted": "disk_unmount"}
    DEFAULT = "mounted"
