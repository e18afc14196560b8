# Named recipes for the common commands (https://github.com/casey/just).
# The README's two commands are scripts/demo and scripts/test, which need no
# `just`; these recipes only wrap them.

# List recipes.
default:
    @just --list

# Build every tool (debug).
build:
    cargo build --workspace

# The main job: up, write, down, up, the file is there (local default).
demo:
    scripts/demo

# The whole test suite (installs what it needs; run as root).
test *ARGS:
    scripts/test {{ARGS}}

# Lint an AppScalefile.
lint FILE="AppScalefile":
    cargo run --quiet -p appscalefile-lint -- {{FILE}}

# Bring every disk of an AppScalefile up (see scripts/up --help).
up FILE *ARGS: build
    scripts/up {{ARGS}} {{FILE}}

# Take every disk of an AppScalefile down (see scripts/down --help).
down FILE *ARGS: build
    scripts/down {{ARGS}} {{FILE}}

# Every disk of an AppScalefile, cloud and node side, in one table (see
# scripts/status --help); changes nothing.
status FILE *ARGS: build
    scripts/status {{ARGS}} {{FILE}}

# Benchmarks; results go to docs/bench.md.
bench:
    scripts/bench

# Install the static tools, man pages, completions, flows and the Ansible
# collection (see scripts/install --help; --debug for a quick build).
install *ARGS:
    scripts/install {{ARGS}}

# Release tarball and .deb for nodes without a Rust toolchain (see
# scripts/package --help).
package *ARGS:
    scripts/package {{ARGS}}

# Build the Ansible collection (release binaries as modules).
ansible:
    scripts/build-collection

# Format and lint the code (rustfmt, clippy, lines rustfmt gave up on).
check:
    scripts/check

# Snapshot every disk of an AppScalefile (see scripts/backup --help).
backup FILE *ARGS: build
    scripts/backup {{ARGS}} {{FILE}}

# Restore every disk of an AppScalefile from a snapshot (see scripts/restore --help).
restore FILE *ARGS: build
    scripts/restore {{ARGS}} {{FILE}}

# Backup and restore on the local default: up, write, snapshot, write, down, restore.
demo-backup:
    scripts/demo-backup
