package inventory

import (
	"slices"
	"testing"
)

func TestRunCgroupsOn(t *testing.T) {
	for p, want := range map[string][]string{
		"/user.slice/x.scope":                              nil,
		"/snakepit/snakepit-guardian":                      nil, // not a run ID
		"/snakepit/snakepit-abc1234/inner":                 {"/snakepit/snakepit-abc1234"},
		"/snakepit/snakepit-abc1234/snakepit-def5678/":     {"/snakepit/snakepit-abc1234/snakepit-def5678", "/snakepit/snakepit-abc1234"},
		"/snakepit-abc1234":                                {"/snakepit-abc1234"},
		"/a/snakepit-abc1234/b/snakepit-def5678/guardians": {"/a/snakepit-abc1234/b/snakepit-def5678", "/a/snakepit-abc1234"},
	} {
		if got := RunCgroupsOn(p); !slices.Equal(got, want) {
			t.Errorf("RunCgroupsOn(%q) = %q, want %q (innermost first)", p, got, want)
		}
	}
}
