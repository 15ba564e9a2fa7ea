#!/usr/bin/env bash
# bench/install-peers.sh -- install the peer filters the throughput benchmark compares guard with:
# Debian's SpamAssassin (spamassassin, spamd, spamc) and rspamd. Idempotent; needs root.
#
# Nothing is left running: /usr/sbin/policy-rc.d (exit 101) keeps the packages' maintainer
# scripts from starting system daemons (it is created only if missing, and removed again if
# this script created it). bench/peers.py starts its own private, offline instances.
set -euo pipefail

PKGS=(spamassassin spamd spamc rspamd)

missing=()
for p in "${PKGS[@]}"; do
  if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) != installed ]]; then
    missing+=("$p")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-peers: already installed: ${PKGS[*]}"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "install-peers: need root to install: ${missing[*]}" >&2
  exit 1
fi

made_policy=0
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\n# installed by guard bench/install-peers.sh: no daemon starts during apt-get\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  made_policy=1
fi
cleanup() { [[ $made_policy -eq 1 ]] && rm -f /usr/sbin/policy-rc.d; return 0; }
trap cleanup EXIT

# refresh the package lists only when there are none (a fresh image)
if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -print -quit 2>/dev/null) ]]; then
  apt-get update -qq
fi
agents_before=" $(pgrep -u debian-spamd -x gpg-agent 2>/dev/null | tr '\n' ' ' || true) "
echo "install-peers: installing ${missing[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

# The spamassassin postinst may leave a gpg-agent for sa-update's keyring running as debian-spamd;
# end only one that this install started (new pid, matched by its exact --homedir), by pid.
for pid in $(pgrep -u debian-spamd -x gpg-agent 2>/dev/null || true); do
  [[ $agents_before == *" $pid "* ]] && continue
  if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- '--homedir /var/lib/spamassassin/sa-update-keys'; then
    kill "$pid" 2>/dev/null || true
  fi
done
# no system instance may be left running (policy-rc.d should have prevented one)
for name in spamd rspamd; do
  if pgrep -x "$name" >/dev/null 2>&1; then
    echo "install-peers: warning: a '$name' process is running (not started by this script)" >&2
  fi
done
echo "install-peers: installed: $(dpkg-query -W -f='${Package} ${Version}  ' "${PKGS[@]}")"
