//go:build linux

package inventory

import (
	"os"
	"strings"
)

// DaemonParentsFile is where the host's snakepit daemon records the cgroup
// directory it creates runs under (one absolute path per line). The daemon
// chooses it at start (its delegated service cgroup, a transient scope, or
// the default parent), so other processes (snakepit ps, kill, gc, the
// guardian) learn it from here: KnownParents includes it.
const DaemonParentsFile = "/run/snakepit/parents"

func init() {
	extraParentsHooks = append(extraParentsHooks, daemonParents)
}

func daemonParents() []string {
	b, err := os.ReadFile(DaemonParentsFile)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}
