#!/usr/bin/env bash
# The project's whole test suite: static checks, Go tests (unit and, as root,
# integration on the real cgroupfs), Python and Elixir tests and the rigs. README.md
# names this script; .ci/run calls it. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
# Static (pure-Go) builds throughout, as shipped (test/setup.sh): the tests
# that build snakepit themselves then test the same kind of binary.
export CGO_ENABLED=0

# setup.sh finds Go (or says which to install), but as a child it cannot
# hand its PATH back: the same lookup here, after it has run.
bash test/setup.sh --for-tests
[ -x /usr/local/go/bin/go ] && export PATH="$PATH:/usr/local/go/bin"
export PATH="$(go env GOPATH)/bin:$PATH"

step() { printf '\n=== %s\n' "$*"; }

# Everything the suite makes is newer than this: the last step looks for
# what it left behind.
since=$(mktemp)
trap 'rm -f "$since"' EXIT

step "gofmt"
bad=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$bad" ]; then echo "gofmt would change:"; echo "$bad"; exit 1; fi

step "go mod tidy leaves go.mod and go.sum as they are"
go mod tidy -diff

step "go vet (linux amd64 and arm64: one code path; and a non-Linux target for the stubs)"
go vet ./...
go vet -tags snakepitd ./cmd/snakepit
GOARCH=arm64 go vet ./...
GOARCH=arm64 go vet -tags snakepitd ./cmd/snakepit
GOOS=darwin go vet ./...

step "staticcheck"
staticcheck ./...
staticcheck -tags snakepitd ./cmd/snakepit

step "go test"
# -p 1: integration tests share the cgroupfs and time their teardowns.
go test -p 1 -count=1 ./... 2>&1 | tee /tmp/snakepit-gotest.log

step "Python: worker helper, pytest plugin, gRPC pool end to end"
SNAKEPIT_BIN=$PWD/bin/snakepit bash test/python.sh

step "Elixir: snakepit_jail library, BEAM pool scenario end to end"
SNAKEPIT_BIN=$PWD/bin/snakepit bash test/elixir.sh

step "VM rig (pure cgroup v2 guest: memory/pids/cpu limit tests)"; SNAKEPIT_BIN=$PWD/bin/snakepit bash test/vm-rig/run.sh

step "systemd rig (daemon as a Type=notify service with Delegate=yes)"; SNAKEPIT_BIN=bin/snakepit bash test/systemd-rig/run.sh

step "benchmarks (quick)"
bash test/bench/run.sh --quick

step "nothing left behind (temp dirs, run and test cgroups)"
left=$(find /tmp -maxdepth 1 -newer "$since" \( -name 'snakepit-bin*' -o -name 'snakepit-records-*' \
	-o -name 'snakepit-daemon-test-bin-*' -o -name 'faultmatrix-*' -o -name 'snakepit-notify-*' \) 2>/dev/null || true)
for m in $(awk '$3 == "cgroup2" {print $2}' /proc/mounts); do
	left+=$(find "$m" -mindepth 1 -type d -newer "$since" \( -name 'snakepit-*' -o -name 'sptest*' \
		-o -name 'spbench*' -o -name 'sp-rig*' \) -printf '\n%p' 2>/dev/null || true)
done
if [ -n "${left//[[:space:]]/}" ]; then echo "left behind:$left"; exit 1; fi
echo "none"
