package daemon_test

import (
	"bytes"
	binenc "encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/daemon"
)

// journalSink is a datagram socket standing in for journald's.
func journalSink(t *testing.T) (string, *net.UnixConn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.socket")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return path, c
}

// readEntry reads one datagram (or the memfd passed in its place) and
// parses the native protocol: NAME=value lines, or NAME\n + 64-bit LE
// length + value + \n.
func readEntry(t *testing.T, c *net.UnixConn) map[string]string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1<<20)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	data := buf[:n]
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			t.Fatalf("control message: %v", err)
		}
		fds, err := unix.ParseUnixRights(&msgs[0])
		if err != nil || len(fds) != 1 {
			t.Fatalf("rights: %v", err)
		}
		f := os.NewFile(uintptr(fds[0]), "memfd")
		defer f.Close()
		// The sender's offset is at the end (journald maps the file).
		if data, err = io.ReadAll(io.NewSectionReader(f, 0, 1<<30)); err != nil {
			t.Fatal(err)
		}
	}
	out := map[string]string{}
	for len(data) > 0 {
		nl := bytes.IndexByte(data, '\n')
		if nl < 0 {
			t.Fatalf("entry without final newline: %q", data)
		}
		line := data[:nl]
		if k, v, ok := bytes.Cut(line, []byte("=")); ok {
			out[string(k)] = string(v)
			data = data[nl+1:]
			continue
		}
		rest := data[nl+1:]
		if len(rest) < 8 {
			t.Fatalf("binary field %q without length", line)
		}
		l := binenc.LittleEndian.Uint64(rest)
		if uint64(len(rest)) < 8+l+1 || rest[8+l] != '\n' {
			t.Fatalf("binary field %q: bad length %d", line, l)
		}
		out[string(line)] = string(rest[8 : 8+l])
		data = rest[8+l+1:]
	}
	return out
}

// TestJournalHandler: a record becomes one datagram of the journal's
// native protocol with PRIORITY, MESSAGE and each attribute as a
// SNAKEPIT_ field, no timestamp of ours; a multi-line value uses the
// binary form; a record larger than a datagram goes as a memfd.
func TestJournalHandler(t *testing.T) {
	path, sink := journalSink(t)
	h, err := daemon.NewJournalHandler(path, &slog.HandlerOptions{Level: slog.LevelInfo})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h)

	log.Debug("not sent")
	log.Info("run created", "run", "abc1234", "uid", 1000, "worker", 2, "pid", 4242)
	e := readEntry(t, sink)
	want := map[string]string{
		"MESSAGE": "run created", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "snakepit",
		"SNAKEPIT_RUN": "abc1234", "SNAKEPIT_UID": "1000", "SNAKEPIT_WORKER": "2", "SNAKEPIT_PID": "4242",
	}
	for k, v := range want {
		if e[k] != v {
			t.Errorf("%s = %q, want %q (entry %v)", k, e[k], v, e)
		}
	}
	for k := range e {
		if strings.Contains(k, "TIME") {
			t.Errorf("field %s: the journal stamps the time itself", k)
		}
	}
	if len(e) != len(want) {
		t.Errorf("entry %v: want exactly %v", e, want)
	}

	// Levels, WithAttrs, WithGroup, odd keys, a multi-line value.
	log.With("run", "zzz9999").WithGroup("td").Warn("teardown", "kill-mechanism", "cgroup.kill", "err", "line 1\nline 2")
	e = readEntry(t, sink)
	for k, v := range map[string]string{
		"PRIORITY": "4", "MESSAGE": "teardown", "SNAKEPIT_RUN": "zzz9999",
		"SNAKEPIT_TD_KILL_MECHANISM": "cgroup.kill", "SNAKEPIT_TD_ERR": "line 1\nline 2",
	} {
		if e[k] != v {
			t.Errorf("%s = %q, want %q (entry %v)", k, e[k], v, e)
		}
	}
	log.Error("boom", slog.Group("g", "a", 1))
	if e = readEntry(t, sink); e["PRIORITY"] != "3" || e["SNAKEPIT_G_A"] != "1" {
		t.Errorf("error entry %v", e)
	}

	// Larger than the socket's send buffer: passed as a sealed memfd.
	big := strings.Repeat("x", 600<<10)
	log.Info("big", "blob", big)
	if e = readEntry(t, sink); e["MESSAGE"] != "big" || e["SNAKEPIT_BLOB"] != big {
		t.Errorf("big entry: MESSAGE %q, blob of %d bytes", e["MESSAGE"], len(e["SNAKEPIT_BLOB"]))
	}

	// Not a socket: refused, so that NewLogger falls back to text.
	if _, err := daemon.NewJournalHandler(filepath.Join(t.TempDir(), "none"), nil); !errors.Is(err, daemon.ErrNoJournal) {
		t.Errorf("NewJournalHandler(missing) = %v, want ErrNoJournal", err)
	}
}

// TestNewLoggerFallsBack: without $JOURNAL_STREAM naming stderr, the
// daemon logs text on stderr.
func TestNewLoggerFallsBack(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "1:1")
	var buf bytes.Buffer
	daemon.NewLogger(&buf, slog.LevelInfo).Info("hello", "run", "abc1234")
	if !strings.Contains(buf.String(), "msg=hello run=abc1234") {
		t.Errorf("text log %q", buf.String())
	}
}
