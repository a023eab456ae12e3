package jail

import "strings"

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
		if len(kv) > len(key) && kv[:len(key)] == key && kv[len(key)] == '=' {
			continue
		}
		out = append(out, kv)
	}
	return out
}
