#!/usr/bin/env bash
# Installs what a fresh machine of this kind lacks, from Debian's packages and
# the Go module proxy only, and builds bin/snakepit and bin/snakepitd.
# Idempotent: installs nothing that is present.
#
#   bash test/setup.sh              # what snakepit and the Python examples need
#   bash test/setup.sh --for-tests  # and the test tools (test/all.sh)
#   bash test/setup.sh --deb        # and a Debian package in bin/ (packaging/deb.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
for_tests=false
deb=false
for a in "$@"; do
  case $a in
    --for-tests) for_tests=true ;;
    --deb) deb=true ;;
    *) echo "usage: setup.sh [--for-tests] [--deb]" >&2; exit 2 ;;
  esac
done

# Go comes with this machine kind (/usr/local/go); Debian's golang is too
# old for go.mod, so say so rather than fail obscurely later.
[ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
  echo "setup: no go on PATH: install Go $(sed -n 's/^go //p' go.mod) or newer (https://go.dev/dl)" >&2
  exit 1
fi

need_apt=()
have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# The examples' gRPC workers; the tests add pytest, bwrap (a benchmark
# baseline), the offline build of the Python package (setuptools as the
# backend, pip, wheel: python/tests/test_packaging.py), and Elixir with
# Erlang/OTP for the BEAM side (test/elixir.sh): erlang-nox is all of OTP
# but the wx GUI (the erlang metapackage would add GTK and WebKit, which
# nothing here needs), and man-db (the man page renders: cmd/snakepit's
# TestManPage).
pkgs="python3-grpcio python3-protobuf"
$for_tests && pkgs="$pkgs python3-pytest bubblewrap python3-setuptools python3-pip python3-wheel elixir erlang-nox man-db"
for p in ${SNAKEPIT_APT_PACKAGES:-$pkgs}; do
  have_deb "$p" || need_apt+=("$p")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

export PATH="$(go env GOPATH)/bin:$PATH"
if $for_tests && ! command -v staticcheck >/dev/null; then
  echo "setup: installing staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2   # 2026.2.2: knows Go 1.26
fi
go mod download
mkdir -p bin
# CGO_ENABLED=0: static binaries. A cgo (dynamically linked) build spends
# about 4 ms more in ld.so and libc start-up on every `snakepit run` here;
# os/user and net have pure-Go implementations (docs/DESIGN.md).
export CGO_ENABLED=0
# Version stamping: the version (CHANGELOG.md's newest release) and the
# source revision (git describe, "unknown" outside a checkout) are linked
# into main.version and main.revision, so `snakepit version` names them
# whatever the Go toolchain's own VCS stamping does (-buildvcs=false, or
# a worktree it cannot read).
eval "$(bash packaging/version.sh)"
ldflags="-X main.version=$version -X main.revision=$revision"
go build -ldflags "$ldflags" -o bin/snakepit ./cmd/snakepit
# The daemon lives in the full build; `snakepit daemon` execs it.
go build -tags snakepitd -ldflags "$ldflags" -o bin/snakepitd ./cmd/snakepit
# The linker ignores -X for a variable the program lacks: check it took.
case "$(bin/snakepit version)" in
  *"$version rev $revision"*) ;;
  *) echo "setup: 'snakepit version' does not show $version rev $revision (main.version/main.revision not linked)" >&2; exit 1 ;;
esac
# The man page, from the same command and flag table as --help and the
# completions (packaging/deb.sh installs it; `man -l bin/snakepit.1`).
bin/snakepit __manpage > bin/snakepit.1
echo "setup: done (bin/snakepit, bin/snakepitd and bin/snakepit.1 built, $version $revision)"
if $deb; then
  bash packaging/deb.sh
fi
