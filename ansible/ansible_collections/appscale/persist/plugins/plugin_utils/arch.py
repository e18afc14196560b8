# Shared by the collection's action plugins: every module is a static binary
# built for one architecture. The x86_64 build is plugins/modules/NAME, the
# aarch64 build plugins/modules/aarch64/NAME (appscale.persist.aarch64.NAME);
# the action plugin of each module runs the build for the host the task runs
# on (its `uname -m`, asked once per host; the delegate's, when delegated),
# so one play serves x86_64 and aarch64 nodes alike. The host variable
# `appscale_module_arch` (x86_64 or aarch64) names the build instead.
from __future__ import annotations

import os

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

# uname -m's words for the two builds.
ARCHES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}

# Per host (the connection's address and user): its build, asked once.
_SEEN: dict[tuple, str] = {}

MODULES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "modules")


def module_for(action: ActionBase, module: str, task_vars) -> str:
    """The fully qualified name of `module`'s build for the task's host."""
    task_vars = task_vars or {}
    arch = task_vars.get("appscale_module_arch")
    if not arch:
        key = (action._play_context.remote_addr, action._play_context.remote_user, action._connection.transport)
        if key not in _SEEN:
            res = action._low_level_execute_command("uname -m", sudoable=False)
            _SEEN[key] = (res.get("stdout") or "").strip()
        arch = _SEEN[key]
    build = ARCHES.get(arch)
    if build is None:
        raise AnsibleActionFail(
            "appscale.persist.%s: no build for the host's architecture %r (x86_64 and aarch64 are built)" % (module, arch)
        )
    if build == "x86_64":
        return "appscale.persist." + module
    if not os.path.exists(os.path.join(MODULES, build, module)):
        raise AnsibleActionFail(
            "appscale.persist.%s: this collection has no %s build of it (plugins/modules/%s/%s): "
            "build the collection with scripts/build-collection --arch all" % (module, build, build, module)
        )
    return "appscale.persist.%s.%s" % (build, module)


class ArchAction(ActionBase):
    """Runs MODULE's build for the host's architecture."""

    MODULE = ""

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        result.update(
            self._execute_module(
                module_name=module_for(self, self.MODULE, task_vars),
                module_args=dict(self._task.args),
                task_vars=task_vars,
            )
        )
        return result
