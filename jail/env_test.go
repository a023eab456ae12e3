package jail

import (
	"slices"
	"testing"
)

// The worker's user's HOME replaces an inherited one, not one the caller
// set (--setenv HOME=/custom, the daemon's env).
func TestUserEnv(t *testing.T) {
	t.Setenv("HOME", "/root")
	t.Setenv("USER", "root")
	user := []string{"HOME=/home/u", "USER=u", "LOGNAME=u"}
	got := UserEnv([]string{"HOME=/custom", "USER=root", "PATH=/bin"}, user)
	if want := []string{"USER=u", "LOGNAME=u"}; !slices.Equal(got, want) {
		t.Errorf("UserEnv = %q, want %q", got, want)
	}
	if got := UserEnv([]string{"HOME=/root"}, user); !slices.Equal(got, user) {
		t.Errorf("inherited values: UserEnv = %q, want all of %q", got, user)
	}
}
