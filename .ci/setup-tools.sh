#!/usr/bin/env bash
# Tools the test tiers use besides sshd: tmux (the TTY UI driven for real), Prometheus + promtool (kay serve is
# scraped by a real Prometheus and its exposition checked by promtool), node_exporter (kay serve is compared with
# it on the same machine; the tests start it on a loopback port, never as a service), iproute2 (network
# namespaces), the interpreters the stream loops run under (bash, perl, python3, busybox), the login shells (zsh,
# fish, tcsh, csh), and what the ssh_config conformance suite needs (util-linux namespaces tools, netbase, the
# OpenSSH client).
# Idempotent; never starts any system service.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "$0")/lib.sh"
if [[ $(id -u) -ne 0 ]]; then
  echo "setup-tools.sh: must run as root" >&2
  exit 1
fi
missing=()
[[ -x /usr/bin/tmux ]] || missing+=(tmux)
[[ -x /usr/bin/prometheus && -x /usr/bin/promtool ]] || missing+=(prometheus)
[[ -x /usr/bin/prometheus-node-exporter ]] || missing+=(prometheus-node-exporter)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v bash >/dev/null 2>&1 || missing+=(bash)
command -v perl >/dev/null 2>&1 || missing+=(perl-base)
[[ -x /usr/bin/python3 ]] || missing+=(python3-minimal)
# busybox: the sh loop is tested under busybox sh and awk, as on Alpine and other busybox hosts.
[[ -x /usr/bin/busybox || -x /bin/busybox ]] || missing+=(busybox)
# The ssh_config conformance suite runs the OpenSSH client in private namespaces (unshare, nsenter, setpriv from
# util-linux), with /etc/services (netbase) bound over by its own table.
[[ -x /usr/bin/unshare && -x /usr/bin/nsenter && -x /usr/bin/setpriv ]] || missing+=(util-linux)
[[ -f /etc/services ]] || missing+=(netbase)
[[ -x /usr/bin/ssh ]] || missing+=(openssh-client)
# The login shells kay's commands must run under, whatever the account's shell (setup-sshd.sh makes a user each).
[[ -x /usr/bin/zsh ]] || missing+=(zsh)
[[ -x /usr/bin/fish ]] || missing+=(fish)
[[ -x /usr/bin/tcsh ]] || missing+=(tcsh)
[[ -x /usr/bin/bsd-csh ]] || missing+=(csh)
apt_install "${missing[@]}"
echo "setup-tools.sh: $(tmux -V); $(promtool --version 2>&1 | head -n1); $(prometheus-node-exporter --version 2>&1 | head -n1)"
