// Package spec is the one description of a run and of a worker, shared by
// every front door: the CLI's flags parse into it, the Go library takes it
// (snakepit.FromSpec, snakepit.CommandFromSpec), and the daemon's API
// accepts it as JSON. Adding a setting is one field here, one flag in the
// CLI's flag table and one line in docs/API.md.
//
// The package is platform-neutral and does nothing: it parses, validates
// and encodes. Validation errors are *FieldError values that name the JSON
// field and the CLI flag and wrap the sentinel of the problem (ErrBadLimit,
// ErrBadNetns, ErrBadSpec, ...), so both doors report the same error.
package spec
