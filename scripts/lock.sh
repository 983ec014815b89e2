#!/usr/bin/env bash
# Re-pin constraints.txt to what is installed in .venv now (run after `scripts/setup.sh --bench`
# and a green `make test`): upgrades are a deliberate change, committed with the suite that passed.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Versions the test suite passed with; scripts/setup.sh installs with -c constraints.txt."
  echo "# Regenerate with scripts/lock.sh after an upgrade that passed 'make test'."
  .venv/bin/pip freeze --exclude-editable | grep -v '^-e ' | LC_ALL=C sort -f
} > constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pins"
