#!/usr/bin/env bash
# Hearth's test command: installs the project and what the tests need, then runs pytest.
# Usage: ./test.sh [pytest args]     e.g. ./test.sh -m "not browser"   (skip the real-browser UI tests)
set -euo pipefail
cd "$(dirname "$0")"

./start.sh --install-only
.venv/bin/python -m pip install --quiet -e ".[test]"

# llama.cpp's convert_lora_to_gguf.py ships in llama-cpp-python's source distribution, not its wheel: the
# LoRA tests convert a PEFT adapter with it. Fetched once from PyPI into ~/.cache/hearth (webui/lora_convert.py).
.venv/bin/python -c "import sys; from webui.lora_convert import find_converter; sys.exit(find_converter() is None)" \
    || echo "Could not fetch llama.cpp's LoRA converter: the GGUF LoRA conversion tests will be skipped." >&2

# The UI tests drive Debian's Chromium through Playwright; install it when we can (root, apt).
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "Installing Chromium for the browser tests ..."
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
        || echo "Could not install chromium: browser tests will be skipped." >&2
fi

exec .venv/bin/python -m pytest "$@"
