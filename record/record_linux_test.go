package record

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/snakepit/snakepit/reaper"
)

// The hand-written encoder writes byte for byte what json.Marshal writes,
// and gives way to it for strings that need escaping.
func TestRecordAppendJSON(t *testing.T) {
	owner := Owner{PID: 4242, Start: 1234567, BootID: "6e999790-5e2e-4dee-b53a-243fa7c6f00d"}
	base := Record{Version: FormatVersion, ID: "abc0xyz", Mechanism: MechanismCgroup, Owner: owner,
		Created: time.Date(2026, 11, 28, 22, 1, 2, 345678900, time.UTC), Grace: 5 * time.Second,
		Cgroup: "/sys/fs/cgroup/snakepit/snakepit-abc0xyz"}
	cases := map[string]func(r *Record){
		"cgroup": func(r *Record) {},
		"posix with pgid": func(r *Record) {
			r.Mechanism, r.Cgroup, r.PGID, r.PGIDStart, r.SID = MechanismPOSIX, "", 31337, 987654, 31000
		},
		"pidns, guardian":  func(r *Record) { r.Owner.PidNS = 4026531836; r.Guardian = &reaper.Identity{PID: 7, Start: 8} },
		"local time zone":  func(r *Record) { r.Created = time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", -5*3600)) },
		"monotonic clock":  func(r *Record) { r.Created = time.Now() },
		"zero values":      func(r *Record) { r.Created, r.Grace, r.Owner = time.Time{}, 0, Owner{} },
		"negative grace":   func(r *Record) { r.Grace = -1 },
		"escaped: html":    func(r *Record) { r.Cgroup = "/sys/fs/cgroup/a<b>&c/snakepit-abc0xyz" },
		"escaped: quote":   func(r *Record) { r.Cgroup = `/sys/fs/cgroup/a"b\c` },
		"escaped: unicode": func(r *Record) { r.Cgroup = "/sys/fs/cgroup/ünï\u2028/x" },
		"escaped: control": func(r *Record) { r.Owner.BootID = "a\tb\x7f" },
	}
	for name, mod := range cases {
		r := base
		mod(&r)
		want, err := json.Marshal(&r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.marshal()
		if err != nil {
			t.Fatalf("%s: marshal: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
		_, fast := r.appendJSON(nil)
		if escaped := len(name) > 8 && name[:8] == "escaped:"; fast == escaped {
			t.Errorf("%s: hand encoder used=%v", name, fast)
		}
		back, err := unmarshalRecord(got, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if back.ID != r.ID || back.Owner != r.Owner || !back.Created.Equal(r.Created) || back.Grace != r.Grace || back.Cgroup != r.Cgroup {
			t.Errorf("%s: round trip changed the record: %+v", name, back)
		}
	}
}
