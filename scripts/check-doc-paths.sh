#!/usr/bin/env bash
# Checks that every repository path named in backticks in the given docs
# (default: docs/architecture.md) exists, so the map of the code cannot
# point at a file that moved. A path is a backticked word that starts with
# crates/, docs/, examples/, scripts/, .ci/ or is Makefile/README.md;
# `lua/*.lua`-style globs are expanded. Exit 1 names each missing path.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- docs/architecture.md
missing=0
for doc in "$@"; do
  while IFS= read -r path; do
    # shellcheck disable=SC2086 # a glob in the doc is expanded on purpose
    if ! compgen -G "$path" >/dev/null; then
      echo "$doc: \`$path\` does not exist"
      missing=1
    fi
  done < <(grep -o '`[^` ]*`' "$doc" | tr -d '`' \
             | grep -E '^(crates/|docs/|examples/|scripts/|\.ci/|Makefile$|README\.md$)' | sort -u)
done
exit $missing
