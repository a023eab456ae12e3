//go:build linux

package record

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/snakepit/snakepit/internal/kfile"
	"github.com/snakepit/snakepit/reaper"
)

// Owner identifies the supervisor that owns a run: a PID, that process's
// start time (field 22 of /proc/PID/stat, so a reused PID is recognised),
// the boot it ran in, and the PID namespace its PID is a number of.
type Owner struct {
	PID    int    `json:"pid"`
	Start  uint64 `json:"start"`
	BootID string `json:"boot_id"`
	// PidNS is the inode of the PID namespace in which PID is meaningful
	// (0: unknown). A reader in another PID namespace cannot judge the
	// owner and must treat it as alive.
	PidNS uint64 `json:"pidns,omitempty"`
}

// Identity returns the owner's PID and start time.
func (o Owner) Identity() reaper.Identity { return reaper.Identity{PID: o.PID, Start: o.Start} }

// Same reports whether o and p name the same process.
func (o Owner) Same(p Owner) bool {
	return o.PID == p.PID && o.Start == p.Start && o.BootID == p.BootID
}

func (o Owner) String() string { return fmt.Sprintf("pid %d (start %d)", o.PID, o.Start) }

var (
	selfOnce  sync.Once
	selfOwner Owner
	selfErr   error
)

// Self returns the calling process as an Owner. It is read once and cached.
func Self() (Owner, error) {
	selfOnce.Do(func() { selfOwner, selfErr = OwnerOf(os.Getpid()) })
	return selfOwner, selfErr
}

// OwnerOf returns process pid as an Owner; the process must be alive.
func OwnerOf(pid int) (Owner, error) {
	st, err := reaper.ReadStat(pid)
	if err != nil {
		return Owner{}, fmt.Errorf("owner: %w", err)
	}
	if st.Dead() {
		return Owner{}, fmt.Errorf("owner: %w: pid %d has exited", reaper.ErrNoProcess, pid)
	}
	boot, err := BootID()
	if err != nil {
		return Owner{}, err
	}
	return Owner{PID: pid, Start: st.Start, BootID: boot, PidNS: ownPidNS()}, nil
}

var (
	bootOnce sync.Once
	bootID   string
	bootErr  error
)

// BootID returns /proc/sys/kernel/random/boot_id (cached).
func BootID() (string, error) {
	bootOnce.Do(func() {
		b, err := kfile.ReadAll("/proc/sys/kernel/random/boot_id")
		if err != nil {
			bootErr = fmt.Errorf("read boot ID: %w", err)
			return
		}
		bootID = strings.TrimSpace(string(b))
	})
	return bootID, bootErr
}

var (
	pidnsOnce sync.Once
	pidnsIno  uint64
)

// ownPidNS returns the inode of our PID namespace, 0 if unreadable.
func ownPidNS() uint64 {
	pidnsOnce.Do(func() {
		l, err := os.Readlink("/proc/self/ns/pid") // "pid:[4026531836]"
		if err != nil {
			return
		}
		l = strings.TrimSuffix(strings.TrimPrefix(l, "pid:["), "]")
		pidnsIno, _ = strconv.ParseUint(l, 10, 64)
	})
	return pidnsIno
}

// Check says whether the owner is still alive, and why. When it cannot
// tell (no permission to read /proc, another PID namespace) it answers
// alive: a run is only ever treated as stale on positive evidence.
func (o Owner) Check() (alive bool, why string) {
	if o.PID <= 0 {
		return false, "no owner recorded"
	}
	if boot, err := BootID(); err == nil && o.BootID != "" && o.BootID != boot {
		return false, fmt.Sprintf("owner pid %d ran in another boot (%s)", o.PID, o.BootID)
	}
	if ns := ownPidNS(); o.PidNS != 0 && ns != 0 && o.PidNS != ns {
		return true, fmt.Sprintf("owner pid %d is in another PID namespace: cannot tell, assuming alive", o.PID)
	}
	st, err := reaper.ReadStat(o.PID)
	switch {
	case errors.Is(err, reaper.ErrNoProcess):
		return false, fmt.Sprintf("owner pid %d is gone", o.PID)
	case err != nil:
		return true, fmt.Sprintf("owner pid %d: cannot tell (%v), assuming alive", o.PID, err)
	case st.Start != o.Start:
		return false, fmt.Sprintf("owner pid %d was reused by another process (start %d, recorded %d)", o.PID, st.Start, o.Start)
	case st.Dead():
		return false, fmt.Sprintf("owner pid %d has exited (zombie)", o.PID)
	}
	return true, fmt.Sprintf("owner pid %d is alive", o.PID)
}

// Alive is Check without the reason.
func (o Owner) Alive() bool {
	a, _ := o.Check()
	return a
}
