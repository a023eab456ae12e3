// Package inventory is the host-wide view of runs, for processes that did
// not create them: where runs live (KnownParents, Lookup), what they are
// (ListRuns, for `snakepit ps`), tearing one down (KillRun), tearing down
// every run of a dead owner (TeardownOwned, for the guardian), and
// removing what dead supervisors left behind (GC).
package inventory
