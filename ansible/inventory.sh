#!/bin/sh
# Ansible inventory script: the nodes of an AppScalefile, one group per role,
# with each node's disk, provider, zone and mountpoint as host variables.
#
#   APPSCALEFILE=path/to/AppScalefile ansible-playbook -i ansible/inventory.sh ...
#
# APPSCALEFILE defaults to ./AppScalefile; APPSCALE_MOUNTPOINT (may hold
# {node}) to /opt/appscale. appscalefile-lint must be on PATH.
case "${1:-}" in
    --list)
        exec appscalefile-lint --quiet --inventory-list \
            --mountpoint "${APPSCALE_MOUNTPOINT:-/opt/appscale}" "${APPSCALEFILE:-AppScalefile}"
        ;;
    --host)
        # Everything is in _meta.hostvars.
        echo '{}'
        ;;
    *)
        echo "usage: $0 --list | --host HOST" >&2
        exit 2
        ;;
esac
