// Package placement decides where a run's cgroup is made, and under systemd
// makes that place one systemd handed to us, so that systemd and snakepit
// never write the same part of the tree:
//
//   - configured: the caller named a parent (--cgroup-parent); used as is.
//   - default: no systemd as PID 1 (or placement turned off): the
//     snakepit/ directory below the cgroup2 root (cgroup.DefaultParent).
//   - delegated: our own unit has Delegate=yes: we move into a leaf of it
//     (systemd.MoveToLeaf) and runs are made below the unit, with the
//     controllers the unit has; stopping or killing the unit kills them.
//   - scope: our unit is not delegated: each run gets a transient scope
//     snakepit-<runid>.scope with Delegate=yes in our slice, bound to our
//     unit (BindsTo=), and the run cgroup is made inside it. systemd
//     refuses an empty scope, so a holder process (sleep) keeps it from
//     the start until the run is torn down, in the scope's leaf "holder";
//     ReleaseScope ends it.
//
// Decide is side-effect free (doctor prints its Plan); Plan.Prepare acts.
// The daemon and the facade both decide through Decide.
package placement
