#!/usr/bin/env bash
# Install Debian's nginx (once per machine) for the load-balancer tests
# (integration_tests/test_fleet.py runs its own nginx, with its own config, prefix and pid file in
# a temp dir, on a free loopback port). The Debian nginx *service* is never left running: the
# install is done with services kept from starting, and one that starts anyway is stopped.
#
# Exit 0 with nginx's path on stdout's last line; exit 1, with a loud banner on stderr, when
# nginx cannot be installed (no apt, not root, no package): the nginx test then fails with the
# same reason. It is never skipped.
set -uo pipefail

find_nginx() {
  command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true
}

loud() {
  {
    echo
    echo "##############################################################################"
    echo "## [setup] nginx is NOT available: $*"
    echo "## The nginx load-balancer test (integration_tests/test_fleet.py) will FAIL."
    echo "## Install Debian's nginx package (apt-get install nginx) and run again."
    echo "##############################################################################"
    echo
  } >&2
  exit 1
}

NGINX="$(find_nginx)"
if [ -n "$NGINX" ]; then
  echo "[setup] nginx ready: $NGINX ($("$NGINX" -v 2>&1))" >&2
  echo "$NGINX"
  exit 0
fi

command -v apt-get >/dev/null 2>&1 || loud "no apt-get on this machine"
[ "$(id -u)" = 0 ] || loud "installing it needs root (apt-get), and this runs as $(id -un)"

echo "[setup] installing Debian's nginx with apt-get (a few seconds)" >&2
# Keep the package's service from starting (Debian's policy-rc.d convention: exit 101 = do not
# start). Only a policy of our own is removed afterwards.
OWN_POLICY=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
  OWN_POLICY=1
fi
APT_OK=1
DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || APT_OK=""
if [ -n "$APT_OK" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >&2 \
    || APT_OK=""
fi
[ -n "$OWN_POLICY" ] && rm -f /usr/sbin/policy-rc.d

NGINX="$(find_nginx)"
[ -n "$APT_OK" ] || loud "apt-get update / apt-get install -y nginx failed (see above)"
[ -n "$NGINX" ] || loud "apt-get installed nginx but no nginx executable was found"

# Had the service started regardless (a machine with systemd running), stop it: the tests run
# their own nginx, and a system one on port 80 is nobody's wish.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
  systemctl stop nginx >&2 || true
  systemctl disable nginx >&2 2>&1 || true
fi
if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
  "$NGINX" -s quit >&2 2>&1 || true
fi

echo "[setup] nginx installed: $NGINX ($("$NGINX" -v 2>&1))" >&2
echo "$NGINX"
