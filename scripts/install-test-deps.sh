#!/usr/bin/env bash
# install-test-deps.sh -- everything guard's test suite needs on a fresh Debian 12 machine.
#
#   sudo bash scripts/install-test-deps.sh
#
# * Debian packages (as root): Dovecot IMAP + LMTP for the integration tests and openssl for
#   their self-signed certificate. The SMTP side is our own aiosmtpd server
#   (scripts/smtp_server.py), so no Postfix. Packages are only installed when one is missing
#   (checked with dpkg), so a second run takes a second or two.
# * No system daemon is started: /usr/sbin/policy-rc.d (exit 101) is created if missing, and
#   scripts/mailstack.sh runs a private Dovecot instance instead.
# * Python: a virtual environment .venv with `pip install -e '.[test]'` of this repository.
#
# Environment:
#   PYTHON=python3        interpreter that creates the virtual environment
#   VENV=.venv            where the virtual environment lives
#   SKIP_APT=1            skip the Debian part (e.g. not root, packages managed elsewhere)
#   SKIP_PIP=1            skip the Python part
set -euo pipefail

# ---------------------------------------------------------------------------------------------
# Debian packages. >>> Later issues add their packages to EXTRA_APT_PACKAGES below, e.g.
#   chromium          (browser-based checks)
#   spamassassin spamd spamc   (peer-filter benchmark)
#   rspamd            (peer-filter benchmark)
# ---------------------------------------------------------------------------------------------
APT_PACKAGES=(
  dovecot-imapd   # IMAP server (pulls dovecot-core)
  dovecot-lmtpd   # LMTP delivery used by scripts/smtp_server.py
  openssl         # self-signed certificate for STARTTLS / IMAPS
  python3-venv    # the project's virtual environment (.venv)
)
EXTRA_APT_PACKAGES=(
  chromium        # headless screenshot test of an HTML reply (tests/unit/respond/test_templates_screenshot.py)
  systemd         # systemd-analyze verify deploy/guard.service (tests/unit/test_deploy.py); works without systemd as PID 1
  # spamassassin spamd spamc
  # rspamd
)
# ---------------------------------------------------------------------------------------------

PYTHON=${PYTHON:-python3}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO_ROOT"

log() { echo "[install-test-deps] $*" >&2; }

is_installed() {  # is_installed PKG -> 0 when dpkg reports it fully installed
  [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

install_apt() {
  local pkgs=("${APT_PACKAGES[@]}" "${EXTRA_APT_PACKAGES[@]}") missing=() p
  for p in "${pkgs[@]}"; do
    is_installed "$p" || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    log "Debian packages already installed: ${pkgs[*]}"
    return 0
  fi
  if ((EUID != 0)); then
    log "missing Debian packages (${missing[*]}) and not root: re-run as root, or SKIP_APT=1"
    return 1
  fi
  # Keep maintainer scripts from starting system-wide daemons (no systemd here anyway);
  # our tests run private instances from scripts/mailstack.sh.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\n# created by guard scripts/install-test-deps.sh: start no daemons\nexit 101\n' \
      >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    log "created /usr/sbin/policy-rc.d (exit 101)"
  fi
  log "installing: ${missing[*]}"
  local t0=$SECONDS
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  log "apt done in $((SECONDS - t0)) s"
}

install_pip() {
  # A virtual environment of the project's own (.venv), so Debian's externally managed
  # system Python is never touched and the tests see exactly the declared dependencies.
  local venv=${VENV:-.venv}
  if [[ ! -x $venv/bin/python ]]; then
    log "creating virtual environment $venv"
    "$PYTHON" -m venv "$venv"
  fi
  log "pip install -e '.[test]' into $venv"
  "$venv/bin/python" -m pip install --disable-pip-version-check -q -e '.[test]'
}

[[ ${SKIP_APT:-0} == 1 ]] || install_apt
[[ ${SKIP_PIP:-0} == 1 ]] || install_pip
log "done"
