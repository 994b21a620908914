#!/usr/bin/env bash
# Prepare this machine for kay's real-OpenSSH test tier (packages/core/src/testing/sshd.ts).
#
# Idempotent: safe to run again. It installs openssh-server (plus procps for `ps` and iproute2 for `ss`),
# makes the privilege-separation directory, and creates the dedicated login user `kaytest`.
# It never starts the system sshd service and never touches /etc/ssh/sshd_config: every test sshd runs
# with its own config from a temp dir.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"

TEST_USER=kaytest
TEST_HOME=/home/${TEST_USER}

if [[ $(id -u) -ne 0 ]]; then
  echo "setup-sshd.sh: must run as root (apt-get, useradd)" >&2
  exit 1
fi

missing=()
[[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
[[ -x /usr/bin/ssh-keygen ]] || missing+=(openssh-client)
command -v ps >/dev/null 2>&1 || missing+=(procps)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
apt_install "${missing[@]}"

# Privilege separation: sshd refuses to start without it (it is normally made by the service unit).
install -d -m 0755 /run/sshd

if ! id -u "$TEST_USER" >/dev/null 2>&1; then
  # No skeleton: .bashrc/.profile would cost CPU on every session; the login shell is dash.
  useradd --no-create-home --home-dir "$TEST_HOME" --shell /bin/sh "$TEST_USER"
fi
# Re-assert the settings every time, so a user made some other way ends up the same.
IFS=: read -r _ _ _ _ _ home shell < <(getent passwd "$TEST_USER")
if [[ $shell != /bin/sh || $home != "$TEST_HOME" ]]; then usermod --shell /bin/sh --home "$TEST_HOME" "$TEST_USER"; fi
# With `UsePAM no`, sshd rejects accounts whose password field starts with `!` (useradd's "locked" default)
# as locked; `*` means "no password can match" but the account is usable with keys.
if [[ $(getent shadow "$TEST_USER" | cut -d: -f2) != '*' ]]; then usermod --password '*' "$TEST_USER"; fi
install -d -m 0755 -o "$TEST_USER" -g "$(id -gn "$TEST_USER")" "$TEST_HOME"
rm -f "$TEST_HOME/.profile" "$TEST_HOME/.bashrc" "$TEST_HOME/.bash_profile" "$TEST_HOME/.bash_logout"
# No motd / last-login lines on interactive sessions.
touch "$TEST_HOME/.hushlogin"
chown "$TEST_USER:$(id -gn "$TEST_USER")" "$TEST_HOME/.hushlogin"

# One user per login shell kay's commands must run under (packages/core/test/collection/login-shells.sshd.test.ts):
# the shells are installed by setup-tools.sh. Each user is made the same way as kaytest; a test picks the user of
# the shell it wants, so no test ever changes another's login shell. busybox picks its applet by the name it is run
# as: its user's shell is a link named `sh`.
BUSYBOX_SH_DIR=/usr/local/libexec/kaytest-busybox
busybox_bin=$(command -v busybox || true)
if [[ -n $busybox_bin ]]; then
  install -d -m 0755 "$BUSYBOX_SH_DIR"
  ln -sfn "$busybox_bin" "$BUSYBOX_SH_DIR/sh"
fi
declare -A SHELL_USERS=(
  [kaytest-bash]=/bin/bash
  [kaytest-zsh]=/usr/bin/zsh
  [kaytest-fish]=/usr/bin/fish
  [kaytest-tcsh]=/usr/bin/tcsh
  [kaytest-csh]=/usr/bin/csh
  [kaytest-busybox]=$BUSYBOX_SH_DIR/sh
)
for user in "${!SHELL_USERS[@]}"; do
  shell=${SHELL_USERS[$user]}
  home=/home/$user
  if ! id -u "$user" >/dev/null 2>&1; then useradd --no-create-home --home-dir "$home" --shell "$shell" "$user"; fi
  IFS=: read -r _ _ _ _ _ h s < <(getent passwd "$user")
  if [[ $s != "$shell" || $h != "$home" ]]; then usermod --shell "$shell" --home "$home" "$user"; fi
  if [[ $(getent shadow "$user" | cut -d: -f2) != '*' ]]; then usermod --password '*' "$user"; fi
  install -d -m 0755 -o "$user" -g "$(id -gn "$user")" "$home"
done

echo "setup-sshd.sh: $(/usr/sbin/sshd -V 2>&1 | head -n1); user ${TEST_USER} ready (shell /bin/sh, home ${TEST_HOME});" \
  "login-shell users: ${!SHELL_USERS[*]}"
