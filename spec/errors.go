package spec

import "errors"

// Sentinel errors of a spec. Every validation error wraps one of them, in a
// *FieldError that names the setting.
var (
	// ErrBadSpec means a setting is malformed (no program, a bad env
	// entry, a NUL byte, ...).
	ErrBadSpec = errors.New("invalid spec")
	// ErrUnknownField means a JSON body has a field the spec does not know.
	ErrUnknownField = errors.New("unknown field")
	// ErrNoCommand means a worker has no program.
	ErrNoCommand = errors.New("command has no program")
	// ErrBadLimit means a limit value could not be parsed or is out of
	// range.
	ErrBadLimit = errors.New("invalid limit")
	// ErrBadNetns means a net value or namespace name is invalid.
	ErrBadNetns = errors.New("invalid network namespace")
	// ErrBadDuration means a duration is malformed or negative.
	ErrBadDuration = errors.New("invalid duration")
	// ErrBadReady means a readiness setting is invalid (a regular
	// expression that does not compile, a timeout without a signal).
	ErrBadReady = errors.New("invalid readiness")
	// ErrBadSignal means a signal name or number is unknown.
	ErrBadSignal = errors.New("invalid signal")
)

// FieldError is a validation error of one setting: Field is its JSON name
// ("limits.memory_max"), Flag its CLI flag ("--memory-max"). Error()
// names the JSON field; the CLI prints FlagError() instead.
type FieldError struct {
	Field string
	Flag  string
	Err   error
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Err.Error()
	}
	return e.Field + ": " + e.Err.Error()
}

// FlagError is the message as the CLI prints it.
func (e *FieldError) FlagError() string {
	if e.Flag == "" {
		return e.Err.Error()
	}
	return e.Flag + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field, flag string, err error) error {
	if err == nil {
		return nil
	}
	return &FieldError{Field: field, Flag: flag, Err: err}
}
