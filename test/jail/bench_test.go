//go:build linux

package jail_test

import (
	"context"
	"testing"
	"time"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/internal/testenv"
)

// benchStart measures starting /bin/true in one run and waiting for it,
// with the given run options and command settings.
func benchStart(b *testing.B, opts snakepit.Options, c snakepit.Command) {
	testenv.RequireCgroup2(b)
	ctx := context.Background()
	r, err := snakepit.Create(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if _, err := r.Teardown(tctx, 0); err != nil {
			b.Error(err)
		}
	})
	c.Args = []string{"/bin/true"}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		w, err := r.Start(ctx, c)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := w.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// The default: no_new_privs, from the spawner's companion thread.
func BenchmarkStartDefault(b *testing.B) { benchStart(b, snakepit.Options{}, snakepit.Command{}) }

// Without no_new_privs: the spawner's main thread.
func BenchmarkStartNewPrivileges(b *testing.B) {
	benchStart(b, snakepit.Options{}, snakepit.Command{Credential: snakepit.Credential{NewPrivileges: true}})
}

// --net none: setns into the run's namespace and back around each fork.
func BenchmarkStartNetNone(b *testing.B) {
	benchStart(b, snakepit.Options{Net: snakepit.Net{Mode: snakepit.NetNone}}, snakepit.Command{})
}

// --user nobody: user database lookup and setuid in the child.
func BenchmarkStartUserNobody(b *testing.B) {
	benchStart(b, snakepit.Options{}, snakepit.Command{Credential: snakepit.Credential{User: "nobody"}})
}

// --ready notify: a socket directory per worker.
func BenchmarkStartReadyNotify(b *testing.B) {
	benchStart(b, snakepit.Options{}, snakepit.Command{Readiness: snakepit.Readiness{Notify: true}})
}

// Create + Teardown of an empty run, with the limit planning (accounting
// probe) that every Create now does.
func BenchmarkCreateTeardown(b *testing.B) {
	testenv.RequireCgroup2(b)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		r, err := snakepit.Create(ctx, snakepit.Options{})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := r.Teardown(ctx, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// Create with --net none: a new network namespace with lo up.
func BenchmarkCreateNetNoneFirstStart(b *testing.B) {
	testenv.RequireCgroup2(b)
	ctx := context.Background()
	for i := 0; i < b.N; i++ {
		r, err := snakepit.Create(ctx, snakepit.Options{Net: snakepit.Net{Mode: snakepit.NetNone}})
		if err != nil {
			b.Fatal(err)
		}
		w, err := r.Start(ctx, snakepit.Command{Args: []string{"/bin/true"}})
		if err != nil {
			b.Fatal(err)
		}
		_, _ = w.Wait(ctx)
		if _, err := r.Teardown(ctx, 0); err != nil {
			b.Fatal(err)
		}
	}
}
