# shellcheck shell=bash
# Make every CPython 3.10-3.13 that pyenv installed findable by tox.
#
#   source ci/pythons.sh
#
# tox 4 looks for `python3.12` (etc.) on PATH. pyenv keeps its CPythons in
# $(pyenv root)/versions/3.12.x/bin, and its shims only answer for the
# versions that are active, so tox would skip the others as "missing". This
# puts a directory of links `python3.10 ... python3.13` (the newest patch
# release of each) in front of PATH. Only versioned names are linked, so
# `python`, `python3` and `pip` stay what they were. Does nothing where pyenv
# is absent. Prints the interpreters it found.

_iostream_pythons() {
    local root=""
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root 2>/dev/null || true)"
    fi
    if [ -z "$root" ] && [ -d "${PYENV_ROOT:-$HOME/.pyenv}/versions" ]; then
        root="${PYENV_ROOT:-$HOME/.pyenv}"
    fi
    if [ -z "$root" ] || [ ! -d "$root/versions" ]; then
        echo "ci/pythons.sh: no pyenv here; using the Pythons already on PATH"
        return 0
    fi
    local links="${IOSTREAM_PYTHONS_DIR:-${TMPDIR:-/tmp}/iostream-pythons-$(id -u)}"
    mkdir -p "$links"
    local minor best dir
    for minor in 10 11 12 13; do
        best=""
        # Newest patch release last in version order.
        for dir in $(ls -d "$root"/versions/3."$minor".* 2>/dev/null | sort -V); do
            if [ -x "$dir/bin/python3.$minor" ]; then
                best="$dir/bin/python3.$minor"
            fi
        done
        if [ -n "$best" ]; then
            ln -sfn "$best" "$links/python3.$minor"
            echo "ci/pythons.sh: python3.$minor -> $best"
        fi
    done
    case ":$PATH:" in
        *":$links:"*) ;;
        *) PATH="$links:$PATH" ;;
    esac
    export PATH
}
_iostream_pythons
unset -f _iostream_pythons
