#!/usr/bin/env bash
# Make sure a headless Chromium is available for the console browser test
# (tests/serving/test_console_browser.py): install Debian's `chromium` package when
# /usr/bin/chromium is missing. Never fails the run: when it cannot install, it prints a
# warning and the browser test is skipped.
set -u

warn() { echo "ensure_browser: warning: $*" >&2; }

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  warn "no /usr/bin/chromium and no apt-get; the console browser test will be skipped"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    warn "no /usr/bin/chromium and not root (no passwordless sudo); the console browser test will be skipped"
    exit 0
  fi
fi
echo "ensure_browser: installing chromium (apt-get) ..."
export DEBIAN_FRONTEND=noninteractive
if ! { $sudo apt-get update -qq >/dev/null 2>&1 && $sudo apt-get install -y -qq chromium >/dev/null 2>&1; }; then
  warn "apt-get install chromium failed; the console browser test will be skipped"
fi
[ -x /usr/bin/chromium ] || warn "/usr/bin/chromium still missing; the console browser test will be skipped"
exit 0
