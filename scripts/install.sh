#!/usr/bin/env bash
# Create .venv and install the bot with the in-process model engine.
#   scripts/install.sh               development: editable, with the test tools (pytest, ruff,
#                                    hadolint, openai, triton, build); the README's commands
#   scripts/install.sh --production  what the bot needs to run, and nothing else, installed
#                                    as a package (as a wheel would be), e.g. for systemd
# Both install every runtime package at the version pinned in constraints.txt (what the tests
# ran with; scripts/lock.py makes it), so an install next month gets what was tested. Its
# torch line is the CPU wheel that CI tests with (this machine kind has it on disk); a CUDA
# host replaces that line with its own build, e.g. TORCH_SPEC="torch==2.11.0".
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    "") project=(-e ".[model,test]") ;;
    --production) project=(".[model]") ;;
    *) echo "usage: scripts/install.sh [--production]" >&2 && exit 2 ;;
esac
PYTHON="${PYTHON:-python3}"
constraints=constraints.txt
if [ -n "${TORCH_SPEC:-}" ]; then
    # pip cannot override a constraint: the pins without torch's, and torch as TORCH_SPEC says
    constraints=$(mktemp)
    trap 'rm -f "$constraints"' EXIT
    grep -v '^torch==' constraints.txt >"$constraints"
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip
"${pip[@]}" --constraint "$constraints" "${TORCH_SPEC:-torch}" "${project[@]}"

# Noto fonts for the "Show to staff" pictures (bot/fonts.py names the files; the bot stops at
# start without them). PyPI has no Noto CJK or Hebrew: Debian's and Ubuntu's packages.
fonts=(fonts-noto-core fonts-noto-cjk)
if ! .venv/bin/python -c "from bot.fonts import FontSet; from bot.settings import Settings; \
FontSet.find(Settings(_env_file=None).fonts_dir)" 2>/dev/null; then
    if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
    if command -v apt-get >/dev/null; then
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq \
            --no-install-recommends "${fonts[@]}" >/dev/null
    else
        echo "install the Noto fonts (Debian: ${fonts[*]}) and set TRAVELBOT_FONTS_DIR" >&2
        exit 1
    fi
fi
