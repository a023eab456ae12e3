package spec

import (
	"fmt"
	"strings"
)

// NetMode selects a run's network namespace.
type NetMode string

// Network modes.
const (
	// NetHost: the workers share the supervisor's network namespace.
	NetHost NetMode = "host"
	// NetNone: a new network namespace with only loopback, up.
	NetNone NetMode = "none"
	// NetNamed: join the namespace bound at /run/netns/<Name>.
	NetNamed NetMode = "named"
)

// Net is a run's network namespace. The zero value is NetHost. JSON: the
// string the CLI's --net takes ("host", "none", or a namespace name).
type Net struct {
	Mode NetMode
	// Name is the /run/netns name for NetNamed.
	Name string
}

// ParseNet parses a --net value: "host", "none", or the name of a
// namespace under /run/netns (as made by "ip netns add NAME"). A namespace
// that is itself called "host" or "none" is reached as "netns:NAME".
func ParseNet(s string) (Net, error) {
	switch s {
	case "", string(NetHost):
		return Net{Mode: NetHost}, nil
	case string(NetNone):
		return Net{Mode: NetNone}, nil
	}
	name := strings.TrimPrefix(s, "netns:")
	if err := ValidNetnsName(name); err != nil {
		return Net{}, err
	}
	return Net{Mode: NetNamed, Name: name}, nil
}

// Validate checks the mode and name of n.
func (n Net) Validate() error {
	switch n.Mode {
	case "", NetHost, NetNone:
		if n.Name != "" {
			return fmt.Errorf("%w: mode %q takes no name", ErrBadNetns, n.Mode)
		}
		return nil
	case NetNamed:
		return ValidNetnsName(n.Name)
	}
	return fmt.Errorf("%w: unknown mode %q (host, none or named)", ErrBadNetns, n.Mode)
}

// IsZero reports whether n is the default (the host's namespace).
func (n Net) IsZero() bool { return (n.Mode == "" || n.Mode == NetHost) && n.Name == "" }

func (n Net) String() string {
	switch n.Mode {
	case NetNamed:
		if n.Name == string(NetHost) || n.Name == string(NetNone) {
			return "netns:" + n.Name
		}
		return n.Name
	case "":
		return string(NetHost)
	}
	return string(n.Mode)
}

// MarshalText writes the --net form.
func (n Net) MarshalText() ([]byte, error) { return []byte(n.String()), nil }

// UnmarshalText parses the --net form.
func (n *Net) UnmarshalText(b []byte) error {
	v, err := ParseNet(string(b))
	*n = v
	return err
}

// Set implements flag.Value.
func (n *Net) Set(s string) error { return n.UnmarshalText([]byte(s)) }

// ValidNetnsName accepts what "ip netns add" would make a file of under
// /run/netns: a non-empty name of at most 255 bytes without "/" or NUL,
// other than "." and "..". The name becomes a path component, so this is a
// security check.
func ValidNetnsName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 255 || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("%w: name %q (want a file name under /run/netns, without '/')", ErrBadNetns, name)
	}
	return nil
}
