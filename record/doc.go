// Package record keeps a run's ownership record and the identity of its
// owner: who owns the run (PID, start time, boot, PID namespace) and since
// when. The record lives on the run cgroup (xattr user.snakepit.run) or,
// for runs without a cgroup and on kernels without user xattrs on
// cgroupfs, in a file under Dir(). gc, ps, kill and the guardian read it
// to tell a live run from a stale one: a run is stale only on positive
// evidence that its owner is gone.
package record
