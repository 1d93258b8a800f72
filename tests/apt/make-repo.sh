#!/usr/bin/env bash
# Usage: tests/apt/make-repo.sh OUTDIR
#
# Builds a tiny, real, unsigned Debian repository under OUTDIR, laid out like a mirror
# (serve OUTDIR as the mirror root; clients use `deb [trusted=yes] URL bookworm main`):
#   dists/bookworm/Release                      (Acquire-By-Hash: yes; MD5Sum + SHA256)
#   dists/bookworm/main/binary-amd64/Packages{,.gz}
#   dists/bookworm/main/binary-amd64/by-hash/{MD5Sum,SHA256}/<hash>
#   pool/main/s/strata-<name>/strata-<name>_1.0_all.deb   (alpha, bravo, charlie, delta)
# strata-alpha Depends on strata-bravo, so `install strata-alpha` fetches two .debs.
# strata-delta carries an incompressible payload of STRATA_APT_BIG_KB KiB (default 512).
#
# Deterministic: same SOURCE_DATE_EPOCH (default 1700000000) => byte-identical files with
# identical mtimes (so nginx's Last-Modified/ETag are stable too). To simulate a mirror
# update, rerun with a later SOURCE_DATE_EPOCH (changes Release's Date and every file).
# Uses dpkg-deb; dpkg-scanpackages (dpkg-dev) and apt-ftparchive (apt-utils) when present,
# otherwise writes Packages/Release by hand. Prints nothing on success.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR" >&2
    exit 2
fi
out=$1
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
big_kb=${STRATA_APT_BIG_KB:-512}
export LC_ALL=C TZ=UTC
umask 022

mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/dists" "$out/pool"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# build NAME DEPENDS DESCRIPTION PAYLOAD-CMD
build() {
    local name=$1 depends=$2 desc=$3 payload=$4
    local pkg=strata-$name ver=1.0
    local root=$work/$pkg
    mkdir -p "$root/DEBIAN" "$root/usr/share/doc/$pkg"
    {
        echo "Package: $pkg"
        echo "Version: $ver"
        echo "Architecture: all"
        echo "Maintainer: Strata Tests <tests@strata.invalid>"
        echo "Installed-Size: 1"
        [[ -n $depends ]] && echo "Depends: $depends"
        echo "Section: misc"
        echo "Priority: optional"
        echo "Description: $desc"
        echo " Built by Strata's tests/apt/make-repo.sh for end-to-end apt tests."
    } >"$root/DEBIAN/control"
    eval "$payload" >"$root/usr/share/doc/$pkg/payload"
    find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    local dir=$out/pool/main/${pkg:0:1}/$pkg
    mkdir -p "$dir"
    dpkg-deb --root-owner-group -Zgzip -z6 --build "$root" "$dir/${pkg}_${ver}_all.deb" >/dev/null
}

# Deterministic incompressible bytes (AES-CTR keystream) when openssl exists.
big_payload() {
    if command -v openssl >/dev/null; then
        head -c "$((big_kb * 1024))" /dev/zero |
            openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f -iv 0 2>/dev/null
    else
        yes "strata-delta payload line, not random because openssl is missing" |
            head -c "$((big_kb * 1024))"
    fi
}

build alpha "strata-bravo (>= 1.0)" "test package that depends on strata-bravo" 'echo "alpha payload"'
build bravo "" "test package pulled in by strata-alpha" 'seq 1 2000'
build charlie "" "independent test package" 'echo "charlie payload"'
build delta "" "test package with a larger incompressible payload" 'big_payload'

# --- Packages ---------------------------------------------------------------------------
bin=dists/bookworm/main/binary-amd64
mkdir -p "$out/$bin"
cd "$out"
if command -v dpkg-scanpackages >/dev/null; then
    dpkg-scanpackages --multiversion pool /dev/null 2>/dev/null >"$bin/Packages"
else
    for deb in $(find pool -name '*.deb' | sort); do
        dpkg-deb -f "$deb" Package Version Architecture Maintainer Installed-Size Depends \
            Section Priority
        echo "Filename: $deb"
        echo "Size: $(stat -c %s "$deb")"
        echo "MD5sum: $(md5sum <"$deb" | cut -d' ' -f1)"
        echo "SHA256: $(sha256sum <"$deb" | cut -d' ' -f1)"
        dpkg-deb -f "$deb" Description | sed '1s/^/Description: /'
        echo
    done >"$bin/Packages"
fi
gzip -9n <"$bin/Packages" >"$bin/Packages.gz"

# --- by-hash copies of the indices ------------------------------------------------------
for algo in MD5Sum:md5sum SHA256:sha256sum; do
    mkdir -p "$bin/by-hash/${algo%%:*}"
    for f in Packages Packages.gz; do
        h=$(${algo#*:} <"$bin/$f" | cut -d' ' -f1)
        cp "$bin/$f" "$bin/by-hash/${algo%%:*}/$h"
    done
done

# --- Release ----------------------------------------------------------------------------
date=$(date -u -d "@$SOURCE_DATE_EPOCH" '+%a, %d %b %Y %H:%M:%S UTC')
rel=dists/bookworm/Release
if command -v apt-ftparchive >/dev/null; then
    (cd dists/bookworm && apt-ftparchive \
        -o APT::FTPArchive::Release::Origin=Strata-Tests \
        -o APT::FTPArchive::Release::Label=Strata-Tests \
        -o APT::FTPArchive::Release::Suite=bookworm \
        -o APT::FTPArchive::Release::Codename=bookworm \
        -o APT::FTPArchive::Release::Architectures=amd64 \
        -o APT::FTPArchive::Release::Components=main \
        -o APT::FTPArchive::Release::Acquire-By-Hash=yes \
        -o "APT::FTPArchive::Release::Date=$date" \
        -o APT::FTPArchive::Release::MD5=yes -o APT::FTPArchive::Release::SHA1=no \
        -o APT::FTPArchive::Release::SHA256=yes -o APT::FTPArchive::Release::SHA512=no \
        release . >"$work/Release")
    mv "$work/Release" "$rel"
else
    {
        echo "Origin: Strata-Tests"
        echo "Label: Strata-Tests"
        echo "Suite: bookworm"
        echo "Codename: bookworm"
        echo "Date: $date"
        echo "Architectures: amd64"
        echo "Components: main"
        echo "Acquire-By-Hash: yes"
        for algo in MD5Sum:md5sum SHA256:sha256sum; do
            echo "${algo%%:*}:"
            for f in main/binary-amd64/Packages main/binary-amd64/Packages.gz; do
                printf ' %s %16d %s\n' "$(${algo#*:} <"dists/bookworm/$f" | cut -d' ' -f1)" \
                    "$(stat -c %s "dists/bookworm/$f")" "$f"
            done
        done
    } >"$rel"
fi

find "$out/dists" "$out/pool" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
