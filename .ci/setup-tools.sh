#!/usr/bin/env bash
# Tools the test tiers use besides sshd: tmux (the TTY UI driven for real), Prometheus + promtool (kay serve is
# scraped by a real Prometheus and its exposition checked by promtool), iproute2 (network namespaces).
# Idempotent; never starts any system service.
set -euo pipefail
if [[ $(id -u) -ne 0 ]]; then
  echo "setup-tools.sh: must run as root" >&2
  exit 1
fi
missing=()
[[ -x /usr/bin/tmux ]] || missing+=(tmux)
[[ -x /usr/bin/prometheus && -x /usr/bin/promtool ]] || missing+=(prometheus)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v bash >/dev/null 2>&1 || missing+=(bash)
command -v perl >/dev/null 2>&1 || missing+=(perl-base)
if [[ ${#missing[@]} -gt 0 ]]; then
  export DEBIAN_FRONTEND=noninteractive
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    # 101: the packages' postinst must not start their services (prometheus would listen on :9090).
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created_policy=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi
fi
echo "setup-tools.sh: $(tmux -V); $(promtool --version 2>&1 | head -n1)"
