# Sourced by the deploy scripts (setup.sh, build_engine.sh, install-service.sh): where they live, the
# repository they belong to, and the virtual environment setup.sh makes (DEFECTDET_VENV overrides it).
# shellcheck shell=bash
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
VENV="${DEFECTDET_VENV:-$REPO_ROOT/.venv-jetson}"
