// Package runid generates, validates and extracts snakepit run IDs.
//
// A run ID is exactly seven characters of [0-9a-z]. It becomes a cgroup path
// component (snakepit-<id>) and a marker in worker command lines, so Validate
// is a security boundary: nothing that fails it may reach the filesystem.
package runid

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Len is the length of every run ID.
const Len = 7

const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"

// Flags that carry a run ID on a worker's command line.
const (
	Flag      = "--snakepit-run-id"
	ShortFlag = "--run-id"
	// EnvVar carries the run ID in a worker's environment.
	EnvVar = "SNAKEPIT_RUN_ID"
)

// ErrInvalid is returned (wrapped) for anything that is not a run ID.
var ErrInvalid = errors.New("invalid run ID")

// ErrNotFound is returned by Extract when no run ID marker is present.
var ErrNotFound = errors.New("no run ID marker")

// Generate returns a fresh random run ID. 36^7 (~7.8e10) IDs drawn from the
// kernel CSPRNG make collisions between concurrent supervisors and restarts
// improbable; callers still treat EEXIST on the cgroup as "in use" and retry.
func Generate() string {
	var b [Len]byte
	// Rejection sampling keeps the distribution uniform: 252 = 7*36.
	var buf [16]byte
	n := 0
	for n < Len {
		if err := fill(buf[:]); err != nil {
			panic("runid: no kernel randomness: " + err.Error())
		}
		for _, c := range buf {
			if c >= 252 {
				continue
			}
			b[n] = alphabet[c%36]
			n++
			if n == Len {
				break
			}
		}
	}
	return string(b[:])
}

// Validate reports whether s is a well-formed run ID.
func Validate(s string) error {
	if len(s) != Len {
		return fmt.Errorf("%w: %q: want %d characters of [0-9a-z]", ErrInvalid, truncate(s), Len)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return fmt.Errorf("%w: %q: want %d characters of [0-9a-z]", ErrInvalid, truncate(s), Len)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// Extract finds a run ID marker in argv: "--snakepit-run-id X", "--run-id X",
// "--snakepit-run-id=X" or "--run-id=X". The first marker wins. A marker with
// an invalid value yields ErrInvalid; no marker yields ErrNotFound.
func Extract(argv []string) (string, error) {
	for i, a := range argv {
		for _, f := range [...]string{Flag, ShortFlag} {
			if a == f {
				if i+1 >= len(argv) {
					return "", fmt.Errorf("%w: %s without a value", ErrInvalid, f)
				}
				v := argv[i+1]
				if err := Validate(v); err != nil {
					return "", err
				}
				return v, nil
			}
			if v, ok := strings.CutPrefix(a, f+"="); ok {
				if err := Validate(v); err != nil {
					return "", err
				}
				return v, nil
			}
		}
	}
	return "", ErrNotFound
}

// ExtractCmdline is Extract for the raw contents of /proc/PID/cmdline
// (NUL-separated, usually NUL-terminated).
func ExtractCmdline(raw []byte) (string, error) {
	raw = bytes.TrimSuffix(raw, []byte{0})
	if len(raw) == 0 {
		return "", ErrNotFound
	}
	parts := bytes.Split(raw, []byte{0})
	argv := make([]string, len(parts))
	for i, p := range parts {
		argv[i] = string(p)
	}
	return Extract(argv)
}

// ExtractEnviron finds SNAKEPIT_RUN_ID=X in the raw contents of
// /proc/PID/environ.
func ExtractEnviron(raw []byte) (string, error) {
	prefix := []byte(EnvVar + "=")
	for _, kv := range bytes.Split(raw, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, prefix); ok {
			s := string(v)
			if err := Validate(s); err != nil {
				return "", err
			}
			return s, nil
		}
	}
	return "", ErrNotFound
}
