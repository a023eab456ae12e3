package main

import (
	"errors"
	"fmt"

	snakepit "github.com/snakepit/snakepit"
)

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// codedIfUnknown gives "no such run" its own exit status.
func codedIfUnknown(err error) error {
	if errors.Is(err, snakepit.ErrUnknownRun) {
		return codedError{exitUnknownRun, err}
	}
	return err
}
