#!/usr/bin/env bash
# mailstack.sh -- guard's private, loopback-only mail system for integration tests.
#
#   Dovecot 2.3  IMAP  127.0.0.1:$IMAP_PORT  (plaintext login allowed, STARTTLS, IDLE, MOVE)
#                IMAPS 127.0.0.1:$IMAPS_PORT (implicit TLS; 0 = off)
#                LMTP  unix socket $MAIL_DIR/dovecot/run/lmtp (+ 127.0.0.1:$LMTP_PORT if set)
#   SMTP         127.0.0.1:$SMTP_PORT  scripts/smtp_server.py (aiosmtpd): local users -> LMTP,
#                every accepted message (local or not) -> $MAIL_DIR/smtp-sink/*.eml
#
# Usage: mailstack.sh COMMAND [dovecot|smtp]
#   start   [PART]   write configs and start (idempotent; waits until the ports answer)
#   stop    [PART]   stop what start started (pid files only)
#   restart [PART]
#   status           one line per part; exit 0 when everything runs, 3 otherwise
#   reset            empty every mailbox and the SMTP sink (servers keep running)
#   purge            stop, then delete $MAIL_DIR
#   env              print shell exports for tests:  eval "$(scripts/mailstack.sh env)"
#   smtp-fail [REPLY] [STAGE] [TIMES]   make the SMTP server answer REPLY (default
#                    "451 4.3.0 try later") at STAGE (rcpt|data|mail|rcpt,data; default
#                    rcpt,data), TIMES times (default: until smtp-ok)
#   smtp-ok          remove the failure switch
#
# Environment (defaults). Settings given to `start` are saved in $MAIL_DIR/stack.env and
# reused by later commands on the same MAIL_DIR unless set again:
#   MAIL_DIR=/tmp/guard-mailstack  IMAP_PORT=10143  IMAPS_PORT=10993  SMTP_PORT=10025
#   LMTP_PORT=0 (unix socket only)  MAIL_PASSWORD=secret  MAIL_HOSTNAME=mail.crm.cat
#   MAIL_USERS="events@crm.cat nhernandez@crm.cat participant@example.org alice@example.org
#               bob@example.org"  (entries may be user:password; default password $MAIL_PASSWORD)
#   LOCAL_DOMAINS="crm.cat example.org"   IMAP_SEPARATOR=/   IMAP_IDLE_NOTIFY_INTERVAL="1 secs"
#   PYTHON=python3 (needs aiosmtpd)
#   MAIL_OAUTH_KEY=  (opt-in) a base64 HMAC key: Dovecot also accepts XOAUTH2/OAUTHBEARER with
#                    HS256 JWTs signed by it (oauth2 passdb, introspection_mode = local; the
#                    JWT's "sub" is the user name, "exp" is checked). Empty = off.
#   MAIL_OAUTH_SMTP= (opt-in) 1 = the SMTP server offers AUTH XOAUTH2 too (same key, same checks)
#
# Needs root (Dovecot switches to the 'mail' user for mailboxes) and the Debian packages from
# scripts/install-test-deps.sh. Every daemon is started with its stdio detached, so callers may
# capture this script's output ($(...), | tee, subprocess pipes) without hanging.
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MAIL_DIR=${MAIL_DIR:-/tmp/guard-mailstack}
MAIL_DIR=$(realpath -m -- "$MAIL_DIR")

SETTINGS=(IMAP_PORT IMAPS_PORT LMTP_PORT SMTP_PORT MAIL_USERS MAIL_PASSWORD MAIL_HOSTNAME
          LOCAL_DOMAINS IMAP_SEPARATOR IMAP_IDLE_NOTIFY_INTERVAL PYTHON MAIL_OAUTH_KEY MAIL_OAUTH_SMTP)
declare -A GIVEN=()
for _v in "${SETTINGS[@]}"; do [[ -n ${!_v+x} ]] && GIVEN[$_v]=${!_v}; done
if [[ -f $MAIL_DIR/stack.env ]]; then
  # shellcheck disable=SC1091
  source "$MAIL_DIR/stack.env"
fi
for _v in "${!GIVEN[@]}"; do printf -v "$_v" '%s' "${GIVEN[$_v]}"; done
: "${IMAP_PORT:=10143}" "${IMAPS_PORT:=10993}" "${LMTP_PORT:=0}" "${SMTP_PORT:=10025}"
: "${MAIL_PASSWORD:=secret}" "${MAIL_HOSTNAME:=mail.crm.cat}"
: "${MAIL_USERS:=events@crm.cat nhernandez@crm.cat participant@example.org alice@example.org bob@example.org}"
: "${LOCAL_DOMAINS:=crm.cat example.org}" "${IMAP_SEPARATOR:=/}"
: "${IMAP_IDLE_NOTIFY_INTERVAL:=1 secs}" "${PYTHON:=python3}"
: "${MAIL_OAUTH_KEY:=}" "${MAIL_OAUTH_SMTP:=}"

DV=$MAIL_DIR/dovecot
DV_PID=$DV/run/master.pid
LMTP_SOCKET=$DV/run/lmtp
SINK=$MAIL_DIR/smtp-sink
SMTP_PID=$MAIL_DIR/smtp.pid
SMTP_FAIL=$MAIL_DIR/smtp-fail

log() { echo "[mailstack] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

save_settings() {
  local v
  {
    echo "# settings of the last 'mailstack.sh start' (sourced by later commands)"
    for v in "${SETTINGS[@]}"; do printf '%s=%q\n' "$v" "${!v}"; done
  } >"$MAIL_DIR/stack.env"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_until() {  # wait_until SECONDS WHAT CMD... : poll CMD every 20 ms
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit * 50; i++)); do
    "$@" && return 0
    sleep 0.02
  done
  log "$what not ready after ${limit}s"
  return 1
}

running() {  # running PID: the process exists and is not a zombie. Daemons are reparented to
  # PID 1, which may take a second or more to reap them; kill -0 still succeeds on a zombie.
  local stat
  [[ -n $1 ]] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

pid_alive() {  # pid_alive PIDFILE
  [[ -s $1 ]] && running "$(tr -dc 0-9 <"$1")"
}

stop_pidfile() {  # stop_pidfile PIDFILE NAME: TERM a pid we started, wait up to 15 s, then KILL
  local f=$1 name=$2 pid i
  [[ -s $f ]] || return 0
  pid=$(tr -dc 0-9 <"$f")
  if running "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 750; i++)); do running "$pid" || break; sleep 0.02; done
    if running "$pid"; then
      log "$name (pid $pid) ignored TERM for 15 s, killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}

# ------------------------------------------------------------------ Dovecot

user_entries() {  # one "address password" per line, lower-cased address
  local u addr pw
  for u in $MAIL_USERS; do
    addr=${u%%:*}
    if [[ $u == *:* ]]; then pw=${u#*:}; else pw=$MAIL_PASSWORD; fi
    printf '%s %s\n' "${addr,,}" "$pw"
  done
}

write_if_changed() {  # write_if_changed FILE < content ; returns 0 when the file changed
  local f=$1 tmp
  tmp=$(mktemp "$f.XXXXXX")
  cat >"$tmp"
  if [[ -f $f ]] && cmp -s "$tmp" "$f"; then rm -f "$tmp"; return 1; fi
  mv -f "$tmp" "$f"
  return 0
}

dovecot_config() {  # returns 0 when dovecot.conf changed
  command -v dovecot >/dev/null || die "dovecot is not installed: run scripts/install-test-deps.sh as root"
  [[ -x /usr/lib/dovecot/lmtp ]] || die "dovecot-lmtpd is not installed: run scripts/install-test-deps.sh as root"
  ((EUID == 0)) || die "the private Dovecot instance needs root (it switches to user 'mail')"
  # unix socket paths (base_dir/...) must fit in 108 bytes
  ((${#DV} + 40 <= 107)) || die "MAIL_DIR=$MAIL_DIR is too long for Dovecot's unix sockets"
  local mail_uid
  mail_uid=$(id -u mail)
  mkdir -p "$DV/run" "$DV/state" "$DV/mail" "$SINK"
  chown mail:mail "$DV/mail"
  if [[ ! -s $DV/cert.pem || ! -s $DV/key.pem ]]; then
    # self-signed certificate for STARTTLS/IMAPS; an EC key is ~20x faster to make than RSA
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj /CN=localhost -addext "subjectAltName=DNS:localhost,DNS:$MAIL_HOSTNAME,IP:127.0.0.1" \
      -keyout "$DV/key.pem" -out "$DV/cert.pem" 2>/dev/null || die "openssl failed"
    chmod 600 "$DV/key.pem"
  fi
  local addr pw
  user_entries | while read -r addr pw; do printf '%s:{PLAIN}%s::::::\n' "$addr" "$pw"; done \
    | write_if_changed "$DV/users" || true
  chgrp dovecot "$DV/users"
  chmod 640 "$DV/users"
  # Mailboxes are written as 'mail' and the users file is read by the auth process as
  # 'dovecot': every parent directory of MAIL_DIR must be searchable by them (pytest's
  # tmp dirs are 0700, for example).
  runuser -u mail -- test -w "$DV/mail" ||
    die "user 'mail' cannot write $DV/mail: a parent directory of $MAIL_DIR is not searchable (chmod o+x it)"
  runuser -u dovecot -- test -r "$DV/users" ||
    die "user 'dovecot' cannot read $DV/users: a parent directory of $MAIL_DIR is not searchable (chmod o+x it)"

  # opt-in OAuth2 (XOAUTH2/OAUTHBEARER): JWTs validated locally against an HMAC key in a
  # dict of files. Dovecot looks up shared/<azp>/<alg>/<kid> ("default" for a missing azp or
  # kid); the fs dict drops "shared/", so the file is <prefix>/default/HS256/default.
  local oauth_mechs="" oauth_passdb=""
  if [[ -n $MAIL_OAUTH_KEY ]]; then
    mkdir -p "$DV/oauth2-keys/default/HS256"
    printf '%s' "$MAIL_OAUTH_KEY" | write_if_changed "$DV/oauth2-keys/default/HS256/default" || true
    chmod -R a+rX "$DV/oauth2-keys"
    write_if_changed "$DV/oauth2.conf.ext" <<OAUTH || true
introspection_mode = local
local_validation_key_dict = fs:posix:prefix=$DV/oauth2-keys/
username_attribute = sub
OAUTH
    chmod 644 "$DV/oauth2.conf.ext"
    oauth_mechs=" xoauth2 oauthbearer"
    oauth_passdb="passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DV/oauth2.conf.ext
}"
  fi

  write_if_changed "$DV/dovecot.conf" <<EOF
# Private Dovecot 2.3 instance for guard's tests (generated by scripts/mailstack.sh; edits are
# overwritten). Loopback only, started without systemd.
instance_name = guard-mailstack
base_dir = $DV/run
state_dir = $DV/state
log_path = $DV/dovecot.log
hostname = $MAIL_HOSTNAME
protocols = imap lmtp
listen = 127.0.0.1

# tests log in with plaintext passwords over loopback, with or without STARTTLS
disable_plaintext_auth = no
auth_mechanisms = plain login$oauth_mechs
auth_username_format = %Lu
# wrong-password tests must not wait 2 s per failure (plus anvil's growing penalty, below)
auth_failure_delay = 0
ssl = yes
ssl_cert = <$DV/cert.pem
ssl_key = <$DV/key.pem

$oauth_passdb
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $DV/users
}
# all mailboxes belong to Debian's 'mail' user (Dovecot refuses to store mail as root)
first_valid_uid = $mail_uid
userdb {
  driver = static
  args = uid=mail gid=mail home=$DV/mail/%d/%n
}
mail_location = maildir:~/Maildir
# no crash safety needed for tests: 2-3x faster APPEND/delivery
mail_fsync = never
# guard plus test helpers open several connections per user
mail_max_userip_connections = 200
# "* OK Still here" interval while IDLE. New mail is pushed ~0.5 s after delivery whatever
# this says (NOTIFY_DELAY_MSECS is fixed at 500 in Dovecot).
imap_idle_notify_interval = $IMAP_IDLE_NOTIFY_INTERVAL

namespace inbox {
  inbox = yes
  separator = $IMAP_SEPARATOR
  # SPECIAL-USE flags for the usual folders; they are not created automatically
  mailbox Drafts {
    special_use = \\Drafts
  }
  mailbox Sent {
    special_use = \\Sent
  }
  mailbox Junk {
    special_use = \\Junk
  }
  mailbox Trash {
    special_use = \\Trash
  }
}

service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0666
  }
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
}
# no anvil auth penalty (2..15 s extra per repeated failed login from one IP)
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
recipient_delimiter = +
EOF
}

dovecot_ready() {
  port_open "$IMAP_PORT" && [[ -S $LMTP_SOCKET ]] &&
    { ((IMAPS_PORT == 0)) || port_open "$IMAPS_PORT"; } &&
    { ((LMTP_PORT == 0)) || port_open "$LMTP_PORT"; }
}

dovecot_start() {
  local changed=0
  dovecot_config && changed=1
  if pid_alive "$DV_PID"; then
    if ((changed == 0)) && dovecot_ready; then
      log "dovecot already running (pid $(cat "$DV_PID"))"
      return 0
    fi
    log "dovecot config changed: restarting"
    dovecot_stop
  fi
  for p in "$IMAP_PORT" "$IMAPS_PORT" "$LMTP_PORT"; do
    ((p == 0)) || ! port_open "$p" || die "port $p is already in use (another mailstack? set IMAP_PORT/IMAPS_PORT/LMTP_PORT)"
  done
  rm -f "$LMTP_SOCKET"
  # The Dovecot master daemonizes but keeps the caller's stderr: detach all stdio.
  if ! dovecot -c "$DV/dovecot.conf" </dev/null >>"$DV/dovecot.stderr" 2>&1; then
    tail -n 20 "$DV/dovecot.stderr" "$DV/dovecot.log" >&2 2>/dev/null || true
    die "dovecot failed to start"
  fi
  if ! wait_until 30 "dovecot" dovecot_ready; then
    tail -n 20 "$DV/dovecot.log" >&2 2>/dev/null || true
    die "dovecot did not open its listeners"
  fi
  log "dovecot: imap 127.0.0.1:$IMAP_PORT imaps :$IMAPS_PORT lmtp $LMTP_SOCKET (pid $(cat "$DV_PID"))"
}

dovecot_stop() {
  if pid_alive "$DV_PID"; then
    stop_pidfile "$DV_PID" dovecot
    log "dovecot stopped"
  fi
  rm -f "$DV_PID"
}

# ------------------------------------------------------------------ SMTP (aiosmtpd)

smtp_args() {
  local d args=(--host 127.0.0.1 --port "$SMTP_PORT" --mail-dir "$MAIL_DIR" --users-file "$DV/users"
                --lmtp "$LMTP_SOCKET" --hostname "$MAIL_HOSTNAME" --pidfile "$SMTP_PID")
  for d in $LOCAL_DOMAINS; do args+=(--local-domain "$d"); done
  [[ -z $MAIL_OAUTH_KEY || -z $MAIL_OAUTH_SMTP ]] || args+=(--oauth-key-file "$MAIL_DIR/smtp-oauth2-key")
  printf '%s\n' "$PYTHON" "$HERE/smtp_server.py" "${args[@]}"
}

smtp_start() {
  mkdir -p "$MAIL_DIR" "$SINK"
  local changed=0
  if [[ -n $MAIL_OAUTH_KEY && -n $MAIL_OAUTH_SMTP ]]; then
    printf '%s\n' "$MAIL_OAUTH_KEY" | write_if_changed "$MAIL_DIR/smtp-oauth2-key" && changed=1
  fi
  smtp_args | write_if_changed "$MAIL_DIR/smtp.args" && changed=1
  if pid_alive "$SMTP_PID"; then
    if ((changed == 0)) && port_open "$SMTP_PORT"; then
      log "smtp already running (pid $(cat "$SMTP_PID"))"
      return 0
    fi
    smtp_stop
  fi
  ! port_open "$SMTP_PORT" || die "port $SMTP_PORT is already in use (another mailstack? set SMTP_PORT)"
  local -a cmd
  mapfile -t cmd <"$MAIL_DIR/smtp.args"
  rm -f "$SMTP_PID"
  # own session + detached stdio: a daemon that outlives this script and its caller's pipes
  setsid "${cmd[@]}" </dev/null >>"$MAIL_DIR/smtp.log" 2>&1 &
  local child=$!
  smtp_up() { [[ -s $SMTP_PID ]] && port_open "$SMTP_PORT"; }
  if ! wait_until 20 "smtp server" smtp_up || ! running "$child"; then
    tail -n 20 "$MAIL_DIR/smtp.log" >&2 || true
    kill -TERM "$child" 2>/dev/null || true
    die "smtp server failed to start"
  fi
  log "smtp: 127.0.0.1:$SMTP_PORT -> lmtp, sink $SINK (pid $(cat "$SMTP_PID"))"
}

smtp_stop() {
  if pid_alive "$SMTP_PID"; then
    stop_pidfile "$SMTP_PID" "smtp server"
    log "smtp stopped"
  fi
  rm -f "$SMTP_PID"
}

# ------------------------------------------------------------------ commands

part_of() { [[ ${1:-all} =~ ^(all|dovecot|smtp)$ ]] || die "unknown part '$1' (all|dovecot|smtp)"; echo "${1:-all}"; }

cmd_start() {
  local part
  part=$(part_of "${1:-}")
  mkdir -p "$MAIL_DIR"
  save_settings
  # SMTP delivers into Dovecot: start Dovecot first
  [[ $part == smtp ]] || dovecot_start
  [[ $part == dovecot ]] || smtp_start
}

cmd_stop() {
  local part
  part=$(part_of "${1:-}")
  [[ $part == dovecot ]] || smtp_stop
  [[ $part == smtp ]] || dovecot_stop
}

cmd_status() {
  local rc=0
  if pid_alive "$DV_PID" && dovecot_ready; then
    echo "dovecot: running (pid $(cat "$DV_PID")) imap 127.0.0.1:$IMAP_PORT imaps :$IMAPS_PORT lmtp $LMTP_SOCKET"
  else
    echo "dovecot: stopped"; rc=3
  fi
  if pid_alive "$SMTP_PID" && port_open "$SMTP_PORT"; then
    echo "smtp: running (pid $(cat "$SMTP_PID")) 127.0.0.1:$SMTP_PORT"
  else
    echo "smtp: stopped"; rc=3
  fi
  [[ ! -e $SMTP_FAIL ]] || echo "smtp: failure switch on: $(head -n 1 "$SMTP_FAIL")"
  return $rc
}

cmd_reset() {
  # Empty every mailbox (Dovecot re-creates a user's Maildir at the next login or delivery;
  # mailboxes get new UIDVALIDITYs) and the SMTP sink. Servers keep running.
  if pid_alive "$DV_PID"; then
    doveadm -c "$DV/dovecot.conf" kick '*' >/dev/null 2>&1 || true
  fi
  if [[ -d $DV/mail ]]; then
    find "$DV/mail" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  fi
  if [[ -d $SINK ]]; then
    find "$SINK" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
  fi
  rm -f "$SMTP_FAIL"
  log "mailboxes and sink emptied"
}

cmd_purge() {
  cmd_stop all
  rm -rf "$MAIL_DIR"
  log "removed $MAIL_DIR"
}

cmd_env() {
  local addr pw users=() first
  while read -r addr pw; do users+=("$addr:$pw"); done < <(user_entries)
  first=${users[0]%%:*}
  q() { printf 'export %s=%q\n' "$1" "$2"; }
  q GUARD_TEST_MAIL_DIR "$MAIL_DIR"
  q GUARD_TEST_IMAP_HOST 127.0.0.1
  q GUARD_TEST_IMAP_PORT "$IMAP_PORT"
  q GUARD_TEST_IMAPS_PORT "$IMAPS_PORT"
  q GUARD_TEST_SMTP_HOST 127.0.0.1
  q GUARD_TEST_SMTP_PORT "$SMTP_PORT"
  q GUARD_TEST_LMTP_SOCKET "$LMTP_SOCKET"
  q GUARD_TEST_LMTP_PORT "$LMTP_PORT"
  q GUARD_TEST_CA_CERT "$DV/cert.pem"
  q GUARD_TEST_SMTP_SINK "$SINK"
  q GUARD_TEST_USERS "${users[*]}"
  q GUARD_TEST_EVENTS_USER "$first"
  q GUARD_TEST_PASSWORD "$MAIL_PASSWORD"
}

cmd_smtp_fail() {
  local reply=${1:-451 4.3.0 try later} stage=${2:-rcpt,data} times=${3:-}
  mkdir -p "$MAIL_DIR"
  {
    echo "$reply"
    echo "stage: $stage"
    [[ -z $times ]] || echo "times: $times"
  } >"$SMTP_FAIL.tmp"
  mv -f "$SMTP_FAIL.tmp" "$SMTP_FAIL"
  log "smtp will answer '$reply' at $stage${times:+ ($times times)}"
}

sub=${1:-}
shift || true
case $sub in
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  restart) cmd_stop "$@"; cmd_start "$@" ;;
  status) cmd_status ;;
  reset) cmd_reset ;;
  purge) cmd_purge ;;
  env) cmd_env ;;
  smtp-fail) cmd_smtp_fail "$@" ;;
  smtp-ok) rm -f "$SMTP_FAIL"; log "smtp failure switch removed" ;;
  *) sed -n '2,32p' "${BASH_SOURCE[0]}"; exit 2 ;;
esac
