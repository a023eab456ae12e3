//go:build linux

package daemon

import (
	"errors"
	"net/http"

	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/jail"
	"github.com/snakepit/snakepit/limits"
	"github.com/snakepit/snakepit/runid"
	"github.com/snakepit/snakepit/spec"
)

// specCodes maps the sentinel of a rejected spec to its status and API
// code: the CLI maps the same sentinels to its exit statuses, so a bad
// setting is one error, whichever door it came through.
var specCodes = []struct {
	err    error
	status int
	code   string
}{
	{spec.ErrInvalidJSON, http.StatusBadRequest, api.CodeInvalidJSON},
	{runid.ErrInvalid, http.StatusBadRequest, api.CodeInvalidRunID},
	{spec.ErrNoCommand, http.StatusBadRequest, api.CodeNoProgram},
	{spec.ErrBadLimit, http.StatusBadRequest, api.CodeInvalidLimit},
	{spec.ErrBadNetns, http.StatusBadRequest, api.CodeInvalidNet},
	{jail.ErrNoNetns, http.StatusBadRequest, api.CodeNoSuchNetns},
	{spec.ErrBadDuration, http.StatusBadRequest, api.CodeInvalidDuration},
	{spec.ErrBadReady, http.StatusBadRequest, api.CodeInvalidReady},
	{jail.ErrUnknownUser, http.StatusBadRequest, api.CodeUnknownUser},
	{limits.ErrControllerUnavailable, http.StatusUnprocessableEntity, api.CodeControllerUnavailable},
	{jail.ErrNotReady, http.StatusUnprocessableEntity, api.CodeNotReady},
	{jail.ErrExitedBeforeReady, http.StatusUnprocessableEntity, api.CodeExitedBeforeReady},
	{spec.ErrBadSpec, http.StatusBadRequest, api.CodeBadRequest},
}

// specError returns the *httpError of a spec error, or nil when err is
// not one.
func specError(err error) *httpError {
	for _, c := range specCodes {
		if errors.Is(err, c.err) {
			return &httpError{status: c.status, code: c.code, err: err}
		}
	}
	return nil
}
