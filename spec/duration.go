package spec

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string ("1.5s", "250ms"). A JSON number has no unit: only 0 is taken.
type Duration time.Duration

// MarshalText writes the duration as a Go duration string.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// UnmarshalJSON accepts a duration string, or the number 0. Any other
// number is refused as a string without a unit is: {"grace": 5} read as
// 5 ns killed at once.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil // unset, as an absent field
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err == nil {
		return d.UnmarshalText([]byte(n))
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("%w: want a Go duration string like \"5s\"", ErrBadDuration)
	}
	return d.UnmarshalText([]byte(s))
}

// ParseDuration parses a Go duration string ("5s", "1m30s"). A bare number
// other than 0 is refused with a hint that a unit is needed, and an
// overflowing value names the input rather than a wrapped-around result.
func ParseDuration(s string) (time.Duration, error) {
	v, err := time.ParseDuration(s)
	if err == nil {
		return v, nil
	}
	if _, nerr := fmt.Sscanf(s, "%g", new(float64)); nerr == nil && !hasUnit(s) {
		return 0, fmt.Errorf("%w: %q needs a unit, e.g. %ss", ErrBadDuration, s, s)
	}
	return 0, fmt.Errorf("%w: %q (want a Go duration such as 500ms, 5s, 2m)", ErrBadDuration, s)
}

func hasUnit(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && c != '.' && c != '-' && c != '+' && c != 'e' && c != 'E' {
			return true
		}
	}
	return false
}
