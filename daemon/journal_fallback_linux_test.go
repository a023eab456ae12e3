package daemon

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestJournalFallback: a record the journal socket refuses (journald gone)
// goes to the fallback handler, with the attributes and groups given before.
func TestJournalFallback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.socket")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewJournalHandler(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	h.fallback = slog.NewTextHandler(&buf, nil)
	c.Close()
	os.Remove(path)
	slog.New(h).With("run", "abc1234").WithGroup("td").Info("run torn down", "killed", true)
	if got := buf.String(); !strings.Contains(got, `msg="run torn down" run=abc1234 td.killed=true`) {
		t.Errorf("fallback got %q", got)
	}
}
