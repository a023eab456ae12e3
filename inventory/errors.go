package inventory

import "errors"

// ErrUnknownRun means no run with that ID exists under the known parents
// (and no POSIX run has a record of it).
var ErrUnknownRun = errors.New("no such run")
