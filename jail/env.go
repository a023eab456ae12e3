package jail

import (
	"os"
	"strings"
)

// OverrideEnv returns env with each KEY=value of extra replacing any KEY=
// already there (getenv returns the first of duplicates, so an inherited
// value must go rather than be shadowed).
func OverrideEnv(env, extra []string) []string {
	for _, kv := range extra {
		k, _, _ := strings.Cut(kv, "=")
		env = withoutKey(env, k)
	}
	return append(env, extra...)
}

func withoutKey(env []string, key string) []string {
	out := make([]string, 0, len(env)+1)
	for _, kv := range env {
		if _, ok := valueOf(kv, key); !ok {
			out = append(out, kv)
		}
	}
	return out
}

// valueOf returns the value of kv if it is KEY=value for key.
func valueOf(kv, key string) (string, bool) {
	return strings.CutPrefix(kv, key+"=")
}

// UserEnv returns the entries of user (HOME, USER, LOGNAME of the worker's
// user) that env does not set otherwise: a key env lacks, or has with our
// own value (inherited, as root's HOME=/root is), takes the user's; one the
// caller set to a value of its own (--setenv HOME=/custom) keeps it.
func UserEnv(env, user []string) []string {
	var out []string
	for _, kv := range user {
		k, _, _ := strings.Cut(kv, "=")
		v, set := lookup(env, k)
		if ours, ok := os.LookupEnv(k); set && !(ok && v == ours) {
			continue
		}
		out = append(out, kv)
	}
	return out
}

// lookup returns the value of key in env, as getenv would (the first).
func lookup(env []string, key string) (string, bool) {
	for _, kv := range env {
		if v, ok := valueOf(kv, key); ok {
			return v, true
		}
	}
	return "", false
}
