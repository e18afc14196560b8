# Shared by the flow scripts: where the tools are, and the summary table.
# shellcheck shell=bash

# The tools: $APPSCALE_PERSIST_BIN, else (installed by scripts/install) the
# bin/ beside this lib/appscale-persist/, else this checkout's debug build
# when present, else $PATH.
persist_bin_dir() {
    if [[ -n "${APPSCALE_PERSIST_BIN:-}" ]]; then
        printf '%s\n' "$APPSCALE_PERSIST_BIN"
        return
    fi
    local lib
    lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    if [[ -f "$lib/tools" ]]; then
        [[ -x "$lib/../../bin/disk-mount" ]] && (cd "$lib/../../bin" && pwd)
        return 0
    fi
    local here
    here=$(cd "$lib/.." && pwd)
    local target="${CARGO_TARGET_DIR:-$here/target}/debug"
    if [[ -x "$target/disk-mount" ]]; then
        printf '%s\n' "$target"
    fi
}

# The tools: one crate each under bins/ (appscale_persist::TOOLS gives
# their pipeline order); once installed, the list scripts/install wrote
# beside this file.
persist_tools() {
    local lib d
    lib=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
    if [[ -f "$lib/tools" ]]; then
        cat "$lib/tools"
        return
    fi
    for d in "$lib"/../bins/*/; do
        basename "$d"
    done
}

# Prefixes the tool directory to PATH, and checks every tool is there.
persist_use_tools() {
    local dir
    dir=$(persist_bin_dir)
    [[ -n "$dir" ]] && export PATH="$dir:$PATH"
    local t
    for t in $(persist_tools); do
        command -v "$t" >/dev/null || {
            echo "$(basename "$0"): $t not found: build with \`cargo build --workspace\` or set APPSCALE_PERSIST_BIN" >&2
            exit 2
        }
    done
    command -v jq >/dev/null || { echo "$(basename "$0"): jq is needed for the summary (apt-get install jq)" >&2; exit 2; }
}

# jq definitions shared by the summary and the error list: `safe` writes a
# string's control characters as \u{..} (as the tools do on stderr), so a
# disk or node name cannot forge or hide lines on the operator's terminal.
PERSIST_JQ_DEFS='
    def hex: "0123456789abcdef" as $d
        | if . < 16 then $d[.:.+1] else $d[(. / 16 | floor):(. / 16 | floor) + 1] + $d[(. % 16):(. % 16) + 1] end;
    def safe: tostring | gsub("(?<c>[[:cntrl:]])"; "\\u{" + (.c | explode[0] | hex) + "}");
'

# Reads final records (NDJSON) on stdin; prints a table on stderr:
# node, disk, device, state, changed (by any step), time (all steps), then
# the message of every failed record.
persist_summary() {
    local title=$1
    jq -rs --arg title "$title" "$PERSIST_JQ_DEFS"'
        def cell: if . == null then "-" else safe end;
        ( ["NODE", "DISK", "DEVICE", "STATE", "CHANGED", "TIME"] ),
        ( .[] | [
            (.node | cell), (.disk | cell), (.device | cell),
            (if .error then "FAILED(\(.error.tool | safe))" else (.state | cell) end),
            ([.steps[]?.changed] | any | tostring),
            ((([.steps[]?.ms] | add) // 0) | tostring) + "ms"
          ] )
        | join("\t")' |
    PERSIST_TITLE=$(jq -rn --arg t "$title" "$PERSIST_JQ_DEFS"' $t | safe') awk -F'\t' '
        { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NR; nf = NF }
        END {
            printf "%s\n", ENVIRON["PERSIST_TITLE"] > "/dev/stderr"
            for (r = 1; r <= n; r++) {
                line = ""
                for (i = 1; i <= nf; i++) line = line sprintf("%-" w[i] "s  ", cell[r, i])
                sub(/ +$/, "", line)
                print line > "/dev/stderr"
            }
        }'
    return 0
}

# Prints "--appscalefile FILE" (NUL-separated, for mapfile -d '') unless
# the provider options ($2...) already name one: the cloud tools then take
# the file's own EC2_URL, project and EC2_ACCESS_KEY/EC2_SECRET_KEY.
persist_appscalefile_opt() {
    local file=$1 a
    shift
    for a in "$@"; do
        [[ $a == --appscalefile || $a == --appscalefile=* ]] && return 0
    done
    printf '%s\0%s\0' --appscalefile "$file"
}

# Prints each failed record's error on stderr.
persist_errors() {
    jq -r "$PERSIST_JQ_DEFS"'select(.error) | "  \(.node // .disk // "record" | safe): \(.error.tool | safe): \(.error.message | safe) [\(.error.code | safe)]"' >&2
}

# Splits provider options ($@) into disk-create's own (what a disk is:
# --size, --type, --encrypted, ...), set in PERSIST_CREATE, and the rest,
# which disk-attach takes as disk-create does, in PERSIST_SHARED; --grow
# sets PERSIST_GROW.
persist_split_provider() {
    PERSIST_CREATE=()
    PERSIST_SHARED=()
    PERSIST_GROW=()
    local args=("$@") i
    for ((i = 0; i < ${#args[@]}; i++)); do
        case ${args[i]} in
            --size|--type|--kms-key|--iops|--throughput|--tag)
                PERSIST_CREATE+=("${args[i]}" "${args[i + 1]:-}"); i=$((i + 1)) ;;
            --size=*|--type=*|--kms-key=*|--iops=*|--throughput=*|--tag=*) PERSIST_CREATE+=("${args[i]}") ;;
            --encrypted|--retag) PERSIST_CREATE+=("${args[i]}") ;;
            --grow) PERSIST_GROW=(--grow) ;;
            *) PERSIST_SHARED+=("${args[i]}") ;;
        esac
    done
}
