# Shared by the flow scripts: where the tools are, and the summary table.
# shellcheck shell=bash

# The tools: $APPSCALE_PERSIST_BIN, else this checkout's debug build when
# present, else $PATH.
persist_bin_dir() {
    if [[ -n "${APPSCALE_PERSIST_BIN:-}" ]]; then
        printf '%s\n' "$APPSCALE_PERSIST_BIN"
        return
    fi
    local here
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    local target="${CARGO_TARGET_DIR:-$here/target}/debug"
    if [[ -x "$target/disk-mount" ]]; then
        printf '%s\n' "$target"
    fi
}

# Prefixes the tool directory to PATH, and checks every tool is there.
persist_use_tools() {
    local dir
    dir=$(persist_bin_dir)
    [[ -n "$dir" ]] && export PATH="$dir:$PATH"
    local t
    for t in appscalefile-lint disk-create disk-attach disk-ensure-fs disk-mount disk-unmount disk-detach; do
        command -v "$t" >/dev/null || {
            echo "$(basename "$0"): $t not found: build with \`cargo build --workspace\` or set APPSCALE_PERSIST_BIN" >&2
            exit 2
        }
    done
    command -v jq >/dev/null || { echo "$(basename "$0"): jq is needed for the summary (apt-get install jq)" >&2; exit 2; }
}

# Reads final records (NDJSON) on stdin; prints a table on stderr:
# node, disk, device, state, changed (by any step), time (all steps), then
# the message of every failed record.
persist_summary() {
    local title=$1
    jq -rs --arg title "$title" '
        def cell: if . == null then "-" else tostring end;
        ( ["NODE", "DISK", "DEVICE", "STATE", "CHANGED", "TIME"] ),
        ( .[] | [
            (.node | cell), (.disk | cell), (.device | cell),
            (if .error then "FAILED(\(.error.tool))" else (.state | cell) end),
            ([.steps[]?.changed] | any | tostring),
            ((([.steps[]?.ms] | add) // 0) | tostring) + "ms"
          ] )
        | @tsv' |
    awk -F'\t' -v title="$title" '
        { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NR; nf = NF }
        END {
            printf "%s\n", title > "/dev/stderr"
            for (r = 1; r <= n; r++) {
                line = ""
                for (i = 1; i <= nf; i++) line = line sprintf("%-" w[i] "s  ", cell[r, i])
                sub(/ +$/, "", line)
                print line > "/dev/stderr"
            }
        }'
    return 0
}

# Prints each failed record's error on stderr.
persist_errors() {
    jq -r 'select(.error) | "  \(.node // .disk // "record"): \(.error.tool): \(.error.message) [\(.error.code)]"' >&2
}
