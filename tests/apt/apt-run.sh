#!/usr/bin/env bash
# Usage: tests/apt/apt-run.sh STATEDIR BASEURL APT-GET-ARGS...
#   e.g. apt-run.sh /tmp/st http://127.0.0.1:8080/debian/ update
#        apt-run.sh /tmp/st http://127.0.0.1:8080/debian/ install --download-only -y strata-alpha
#
# Runs the real apt-get against `deb [trusted=yes] BASEURL bookworm main` (amd64) with all of
# its state private under STATEDIR: its own apt.conf (via APT_CONFIG, so the host's
# /etc/apt/apt.conf{,.d} are not read), an empty dpkg status file, lists in STATEDIR/lists,
# downloaded .debs in STATEDIR/archives. It never touches /var/lib/apt, /var/cache/apt or
# /etc/apt, takes no locks, uses no proxy, and works as root or as any other user.
# Extra apt options can be passed as `-o Key=Value` among APT-GET-ARGS. apt-get's exit
# status is this script's.
set -euo pipefail

if [[ $# -lt 3 ]]; then
    echo "usage: $0 STATEDIR BASEURL APT-GET-ARGS..." >&2
    exit 2
fi
mkdir -p "$1"
st=$(cd "$1" && pwd)
url=$2
shift 2

mkdir -p "$st/etc/apt.conf.d" "$st/etc/sources.list.d" "$st/etc/preferences.d" \
    "$st/etc/trusted.gpg.d" "$st/lists/partial" "$st/archives/partial" "$st/cache" "$st/log"
touch "$st/status"
echo "deb [trusted=yes] $url bookworm main" >"$st/etc/sources.list"

# Download as the invoking user (root => no drop to _apt, which could not enter a 0700 dir).
user=$(id -un)
cat >"$st/etc/apt.conf" <<CONF
Dir "/";
Dir::Etc "$st/etc/";
Dir::Etc::main "apt.conf";
Dir::Etc::parts "apt.conf.d";
Dir::Etc::sourcelist "sources.list";
Dir::Etc::sourceparts "sources.list.d";
Dir::Etc::preferences "preferences";
Dir::Etc::preferencesparts "preferences.d";
Dir::Etc::trusted "trusted.gpg";
Dir::Etc::trustedparts "trusted.gpg.d";
Dir::State "$st/";
Dir::State::lists "lists/";
Dir::State::status "$st/status";
Dir::State::extended_states "extended_states";
Dir::Cache "$st/cache/";
Dir::Cache::archives "$st/archives/";
Dir::Log "$st/log/";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
APT::Sandbox::User "$user";
APT::Get::List-Cleanup "false";
APT::Install-Recommends "false";
APT::Keep-Downloaded-Packages "true";
Binary::apt::APT::Keep-Downloaded-Packages "true";
Debug::NoLocking "true";
Acquire::Languages "none";
Acquire::PDiffs "false";
Acquire::http::Proxy "DIRECT";
Acquire::https::Proxy "DIRECT";
Acquire::http::Proxy-Auto-Detect "";
Acquire::http::Timeout "20";
Acquire::Retries "0";
CONF

unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY all_proxy no_proxy NO_PROXY
export APT_CONFIG=$st/etc/apt.conf LC_ALL=C DEBIAN_FRONTEND=noninteractive
exec apt-get -q "$@"
