# Shared by the collection's action plugins: a module whose `state:` has two
# end states (disk_mount: mounted or unmounted) runs, on the host, the module
# that reaches the state asked for. Each binary module does one step; this
# controller-side code only picks which.
from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase

from ansible_collections.appscale.persist.plugins.plugin_utils.arch import module_for


class StateAction(ActionBase):
    """Runs the module for the task's `state` (STATES: state -> module)."""

    STATES: dict[str, str] = {}
    DEFAULT = ""

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        args = dict(self._task.args)
        state = args.get("state") or self.DEFAULT
        if state not in self.STATES:
            raise AnsibleActionFail(
                "argument state must be one of %s, not %r" % (", ".join(self.STATES), state)
            )
        module = self.STATES[state]
        own = module == self.STATES[self.DEFAULT]
        args["state"] = state
        # The other module does not take this one's own options (they may
        # come from module_defaults): it ignores them rather than fail.
        # (ignore_unknown_opts is ansible-core 2.17's: the collection
        # requires it; the module's own state does not need it.)
        extra = {} if own else {"ignore_unknown_opts": True}
        result.update(
            self._execute_module(
                module_name=module_for(self, module, task_vars),
                module_args=args,
                task_vars=task_vars,
                **extra
            )
        )
        return result
