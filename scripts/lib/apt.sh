# shellcheck shell=bash
# scripts/lib/apt.sh - install Debian packages the scripts need, only those that are missing.
#
# Sourced, not run:   source "$ROOT/scripts/lib/apt.sh"
#                     apt_install rustc-web cargo-web rust-web-src lld-22
#
# apt_missing PKG...  prints, one a line, the packages dpkg does not list as installed.
# apt_install PKG...  does nothing (and touches no apt) when every package is installed;
#                     otherwise runs `apt-get update` once, then installs the missing ones in a
#                     single `apt-get install` (so that packages built from one source, such as
#                     rustc-web and rust-web-src, come from the same version), non-interactively,
#                     without recommends, with sudo when not root. Says which it installs; fails
#                     (returns 1, after saying why on stderr) when there is no dpkg, no root and
#                     no sudo, apt-get fails, or a package is still not installed afterwards.
# Messages start with the calling script's name.

apt_is_installed() {
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]
}

apt_missing() {
    local p
    for p in "$@"; do
        apt_is_installed "$p" || printf '%s\n' "$p"
    done
}

apt_install() {
    local me=${0##*/} missing=() p
    command -v dpkg-query >/dev/null || {
        printf '%s: dpkg-query not found: this script expects Debian 12\n' "$me" >&2
        return 1
    }
    mapfile -t missing < <(apt_missing "$@")
    (( ${#missing[@]} )) || return 0

    local sudo=()
    if (( EUID != 0 )); then
        command -v sudo >/dev/null || {
            printf '%s: need root (or sudo) to apt-get install %s\n' "$me" "${missing[*]}" >&2
            return 1
        }
        sudo=(sudo)
    fi
    printf '%s: installing missing packages: %s\n' "$me" "${missing[*]}" >&2
    # sudo resets the environment, so DEBIAN_FRONTEND goes through env.
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q || {
        printf '%s: apt-get update failed\n' "$me" >&2
        return 1
    }
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}" || {
        printf '%s: apt-get install %s failed\n' "$me" "${missing[*]}" >&2
        return 1
    }
    for p in "${missing[@]}"; do
        apt_is_installed "$p" || {
            printf '%s: %s did not install\n' "$me" "$p" >&2
            return 1
        }
    done
}
