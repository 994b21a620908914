# Shared by the .ci setup scripts: install Debian packages without letting their postinst start any service.
apt_install() {
  [[ $# -gt 0 ]] || return 0
  export DEBIAN_FRONTEND=noninteractive
  local policy=/usr/sbin/policy-rc.d created=0
  if [[ ! -e $policy ]]; then
    # 101 = "action not allowed": sshd / prometheus are not started by the package.
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 0755 "$policy"
    created=1
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@"
  if [[ $created -eq 1 ]]; then rm -f "$policy"; fi
}
