package jail

import "errors"

// Sentinel errors of the worker-side jail.
var (
	// ErrClosed means the run was torn down while a worker was being
	// prepared (the root package's ErrClosed is this error).
	ErrClosed = errors.New("run already torn down")
	// ErrNoNetns means a named network namespace does not exist.
	ErrNoNetns = errors.New("no such network namespace")
	// ErrUnknownUser means a user or group is not in the user database and
	// is not numeric.
	ErrUnknownUser = errors.New("unknown user or group")
	// ErrNotReady means a worker did not become ready within its
	// readiness timeout.
	ErrNotReady = errors.New("worker not ready in time")
	// ErrExitedBeforeReady means a worker exited before it became ready.
	ErrExitedBeforeReady = errors.New("worker exited before it was ready")
)
