package snakepit

import (
	"github.com/snakepit/snakepit/containment"
	"github.com/snakepit/snakepit/limits"
	"github.com/snakepit/snakepit/spec"
)

// The settings of a run and of a worker are package spec's; these names
// keep the facade's API as it was.
type (
	Limits     = spec.Limits
	CPUMax     = spec.CPUMax
	Bytes      = spec.Bytes
	Count      = spec.Count
	Net        = spec.Net
	NetMode    = spec.NetMode
	Credential = spec.Credential
	Readiness  = spec.Readiness
	ReadyInfo  = spec.ReadyInfo
	Duration   = spec.Duration

	// Event is a limit event of a run (Options.OnEvent).
	Event = limits.Event
	// EventKind names a limit event.
	EventKind = limits.EventKind
	// Stats are a run's resource usage.
	Stats = limits.Stats
	// ControllerError says why a cgroup controller is not available.
	ControllerError = limits.ControllerError
	// TeardownReport says what a teardown did.
	TeardownReport = containment.Report
)

// Network modes, limit events and limit values.
const (
	NetHost  = spec.NetHost
	NetNone  = spec.NetNone
	NetNamed = spec.NetNamed

	EventOOMKill      = limits.EventOOMKill
	EventOOMGroupKill = limits.EventOOMGroupKill
	EventPidsMax      = limits.EventPidsMax

	LimitMax = spec.LimitMax

	// DefaultGrace is the time between SIGTERM and cgroup.kill when a
	// caller does not choose one.
	DefaultGrace = spec.DefaultGrace
)

// Parsers of the settings' CLI forms.
var (
	ParseBytes  = spec.ParseBytes
	ParsePids   = spec.ParsePids
	ParseCPUMax = spec.ParseCPUMax
	ParseNet    = spec.ParseNet
)
