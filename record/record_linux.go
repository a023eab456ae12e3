//go:build linux

package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/reaper"
	"github.com/snakepit/snakepit/runid"
)

// Mechanisms a run can be contained by.
const (
	MechanismCgroup = "cgroup"
	MechanismPOSIX  = "posix"
)

// Xattr is the extended attribute on a run cgroup that holds its
// Record (JSON). user.* rather than trusted.*: readable by unprivileged ps
// and writable by a non-root supervisor of a delegated subtree; only whoever
// may write the cgroup directory itself (and so could kill or remove the run
// anyway) can change it. See docs/DESIGN.md.
const Xattr = "user.snakepit.run"

// DirEnv overrides the directory of file records.
const DirEnv = "SNAKEPIT_RECORDS_DIR"

// FormatVersion is the version of the Record format written.
const FormatVersion = 1

// ErrNoRecord means a run has no ownership record (made by hand, by an old
// version, or not yet written).
var ErrNoRecord = errors.New("no ownership record")

// Record is a run's ownership record: who owns the run and since when. It
// lives on the run cgroup (xattr Xattr) or, for runs without a cgroup
// (POSIX mode) and on kernels without user xattrs on cgroupfs, in
// Dir()/<id>.json.
type Record struct {
	Version   int    `json:"v"`
	ID        string `json:"id"`
	Mechanism string `json:"mechanism"`
	Owner     Owner  `json:"owner"`
	// Created is when the run was created.
	Created time.Time `json:"created"`
	// Grace is the grace period the owner tears the run down with; kill
	// uses it when given none.
	Grace time.Duration `json:"grace_ns"`
	// Cgroup is the run cgroup's absolute path (cgroup mechanism).
	Cgroup string `json:"cgroup,omitempty"`
	// PGID is the run's process group (POSIX mechanism), 0 if none.
	PGID int `json:"pgid,omitempty"`
	// PGIDStart is the start time of the group's leader, the run's first
	// worker (0 in records of versions before it): a group of the same
	// number made later has another leader.
	PGIDStart uint64 `json:"pgid_start,omitempty"`
	// SID is the session of that group. With PGIDStart, 0 is a session
	// too (init's, or one whose leader is outside the reader's PID
	// namespace); without, 0 means unknown.
	SID int `json:"sid,omitempty"`
	// Guardian is the guardian watching the owner, if one was started.
	Guardian *reaper.Identity `json:"guardian,omitempty"`
}

// Stale reports whether rec's owner is gone (dead, PID reused, or another
// boot), with the reason. A run with a live owner is never stale.
func Stale(rec *Record) (bool, string) {
	alive, why := rec.Owner.Check()
	return !alive, why
}

func (rec *Record) validate() error {
	if err := runid.Validate(rec.ID); err != nil {
		return err
	}
	switch rec.Mechanism {
	case MechanismCgroup, MechanismPOSIX:
	default:
		return fmt.Errorf("record %s: unknown mechanism %q", rec.ID, rec.Mechanism)
	}
	return nil
}

func (rec *Record) marshal() ([]byte, error) {
	if rec.Version == 0 {
		rec.Version = FormatVersion
	}
	if err := rec.validate(); err != nil {
		return nil, err
	}
	if b, ok := rec.appendJSON(make([]byte, 0, 320)); ok {
		return b, nil
	}
	return json.Marshal(rec)
}

// appendJSON appends rec encoded exactly as json.Marshal encodes it, without
// reflection: the first json.Marshal in a process builds its type caches,
// about 0.5 ms here, on the path of every `snakepit run`. ok is false when a
// string needs escaping (json.Marshal then does it) or the time cannot be
// encoded. TestRecordAppendJSON holds the two encodings equal.
func (rec *Record) appendJSON(b []byte) (_ []byte, ok bool) {
	for _, s := range []string{rec.ID, rec.Mechanism, rec.Owner.BootID, rec.Cgroup} {
		if !plainJSONString(s) {
			return nil, false
		}
	}
	created, err := rec.Created.MarshalJSON()
	if err != nil {
		return nil, false
	}
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(rec.Version), 10)
	b = append(b, `,"id":"`...)
	b = append(b, rec.ID...)
	b = append(b, `","mechanism":"`...)
	b = append(b, rec.Mechanism...)
	b = append(b, `","owner":{"pid":`...)
	b = strconv.AppendInt(b, int64(rec.Owner.PID), 10)
	b = append(b, `,"start":`...)
	b = strconv.AppendUint(b, rec.Owner.Start, 10)
	b = append(b, `,"boot_id":"`...)
	b = append(b, rec.Owner.BootID...)
	b = append(b, '"')
	if rec.Owner.PidNS != 0 {
		b = append(b, `,"pidns":`...)
		b = strconv.AppendUint(b, rec.Owner.PidNS, 10)
	}
	b = append(b, `},"created":`...)
	b = append(b, created...)
	b = append(b, `,"grace_ns":`...)
	b = strconv.AppendInt(b, int64(rec.Grace), 10)
	if rec.Cgroup != "" {
		b = append(b, `,"cgroup":"`...)
		b = append(b, rec.Cgroup...)
		b = append(b, '"')
	}
	if rec.PGID != 0 {
		b = append(b, `,"pgid":`...)
		b = strconv.AppendInt(b, int64(rec.PGID), 10)
	}
	if rec.PGIDStart != 0 {
		b = append(b, `,"pgid_start":`...)
		b = strconv.AppendUint(b, rec.PGIDStart, 10)
	}
	if rec.SID != 0 {
		b = append(b, `,"sid":`...)
		b = strconv.AppendInt(b, int64(rec.SID), 10)
	}
	if g := rec.Guardian; g != nil {
		b = append(b, `,"guardian":{"pid":`...)
		b = strconv.AppendInt(b, int64(g.PID), 10)
		b = append(b, `,"start":`...)
		b = strconv.AppendUint(b, g.Start, 10)
		b = append(b, '}')
	}
	return append(b, '}'), true
}

// plainJSONString reports whether json.Marshal writes s as is between
// quotes: printable ASCII other than the characters it escapes.
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

func unmarshalRecord(b []byte, where string) (*Record, error) {
	var rec Record
	if err := json.Unmarshal(b, &rec); err != nil {
		return nil, fmt.Errorf("record %s: %w", where, err)
	}
	if err := rec.validate(); err != nil {
		return nil, fmt.Errorf("record %s: %w", where, err)
	}
	return &rec, nil
}

// The xattr calls, replaced by tests that exercise the file-record
// fallback of kernels without user xattrs on cgroupfs.
var (
	setxattr = unix.Setxattr
	getxattr = unix.Getxattr
)

// WriteCgroup stores rec on the run cgroup at path. Where cgroupfs has no
// user xattrs (EOPNOTSUPP: Linux < 5.7) it falls back to a file record
// (file is true: the run's teardown must then remove it); ReadCgroup finds
// either.
func WriteCgroup(path string, rec *Record) (file bool, err error) {
	b, err := rec.marshal()
	if err != nil {
		return false, err
	}
	err = setxattr(path, Xattr, b, 0)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return true, Write(rec)
	}
	if err != nil {
		return false, &fs.PathError{Op: "setxattr " + Xattr, Path: path, Err: err}
	}
	return false, nil
}

// ReadCgroup reads the record of the run cgroup at path: its xattr,
// else a file record naming that cgroup. No record yields ErrNoRecord; a
// missing cgroup an error wrapping fs.ErrNotExist.
func ReadCgroup(path string) (*Record, error) {
	buf := make([]byte, 1024)
	for {
		n, err := getxattr(path, Xattr, buf)
		switch {
		case err == nil:
			return unmarshalRecord(buf[:n], path)
		case errors.Is(err, unix.ERANGE) && len(buf) < 1<<16:
			buf = make([]byte, 4*len(buf))
			continue
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.EOPNOTSUPP):
			id, ok := strings.CutPrefix(filepath.Base(path), "snakepit-")
			if ok && runid.Validate(id) == nil {
				if rec, ferr := Read(id); ferr == nil && rec.Mechanism == MechanismCgroup && rec.Cgroup == path {
					return rec, nil
				}
			}
			return nil, fmt.Errorf("%w: %s", ErrNoRecord, path)
		default:
			return nil, &fs.PathError{Op: "getxattr " + Xattr, Path: path, Err: err}
		}
	}
}

// Dir is where file records live: $SNAKEPIT_RECORDS_DIR, else
// /run/snakepit/runs for root, else $XDG_RUNTIME_DIR/snakepit/runs (when
// set), else /run/snakepit/runs.
func Dir() string {
	if d := os.Getenv(DirEnv); d != "" {
		return d
	}
	if os.Geteuid() != 0 {
		if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
			return filepath.Join(x, "snakepit", "runs")
		}
	}
	return "/run/snakepit/runs"
}

func recordPath(id string) (string, error) {
	if err := runid.Validate(id); err != nil {
		return "", err
	}
	return filepath.Join(Dir(), id+".json"), nil
}

// Write stores rec as Dir()/<id>.json, atomically (a temp file
// renamed into place), creating the directory (0755) when missing.
func Write(rec *Record) error {
	b, err := rec.marshal()
	if err != nil {
		return err
	}
	p, _ := recordPath(rec.ID) // validated by marshal
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(p), "."+rec.ID+".*.tmp")
	if err != nil {
		return err
	}
	_, werr := tmp.Write(append(b, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

// Read reads the file record of run id. None yields ErrNoRecord.
func Read(id string) (*Record, error) {
	p, err := recordPath(id)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNoRecord, p)
	}
	if err != nil {
		return nil, err
	}
	rec, err := unmarshalRecord(b, p)
	if err != nil {
		return nil, err
	}
	if rec.ID != id {
		return nil, fmt.Errorf("record %s: names run %s", p, rec.ID)
	}
	return rec, nil
}

// Remove deletes the file record of run id; a missing one is not an
// error.
func Remove(id string) error {
	p, err := recordPath(id)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// List returns every valid file record, sorted by ID. Unreadable or
// malformed files are skipped.
func List() ([]*Record, error) {
	ents, err := os.ReadDir(Dir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || runid.Validate(id) != nil {
			continue
		}
		if rec, err := Read(id); err == nil {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// New makes the record of a run being created: owner completed (the
// calling process when zero; start time, boot and PID namespace read when
// missing), created now.
func New(id, mechanism string, owner Owner, grace time.Duration, cgPath string, guardian *reaper.Identity) (*Record, error) {
	if owner.PID == 0 {
		o, err := Self()
		if err != nil {
			return nil, err
		}
		owner = o
	} else if owner.Start == 0 {
		o, err := OwnerOf(owner.PID)
		if err != nil {
			return nil, err
		}
		owner = o
	}
	if owner.BootID == "" {
		b, err := BootID()
		if err != nil {
			return nil, err
		}
		owner.BootID = b
	}
	if owner.PidNS == 0 {
		owner.PidNS = ownPidNS()
	}
	return &Record{
		Version:   FormatVersion,
		ID:        id,
		Mechanism: mechanism,
		Owner:     owner,
		Created:   time.Now().UTC(),
		Grace:     grace,
		Cgroup:    cgPath,
		Guardian:  guardian,
	}, nil
}

// GuardianLockPath is the per-owner lock a guardian holds while it watches
// owner (beside the records directory), so that one guardian per owner
// watches and gc can remove locks of dead owners.
func GuardianLockPath(owner Owner) string {
	return filepath.Join(GuardianLockDir(), fmt.Sprintf("%d-%d.lock", owner.PID, owner.Start))
}

// GuardianLockDir is the directory of guardian locks.
func GuardianLockDir() string { return filepath.Join(filepath.Dir(Dir()), "guardians") }

// NoXattrsForTest makes the record functions behave as on a kernel without
// user xattrs on cgroupfs (EOPNOTSUPP) until restore is called, so tests
// can exercise the file-record fallback on any kernel.
func NoXattrsForTest() (restore func()) {
	setxattr = func(string, string, []byte, int) error { return unix.EOPNOTSUPP }
	getxattr = func(string, string, []byte) (int, error) { return 0, unix.EOPNOTSUPP }
	return func() { setxattr, getxattr = unix.Setxattr, unix.Getxattr }
}
