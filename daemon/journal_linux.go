//go:build linux

package daemon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"golang.org/x/sys/unix"
)

// JournalSocket is the journal's native protocol socket.
const JournalSocket = "/run/systemd/journal/socket"

// journalPrefix starts the name of every field made from a log attribute:
// the journal's own fields (_PID, MESSAGE, ...) are never overwritten, and
// `journalctl SNAKEPIT_RUN=abc1234` finds a run's lines.
const journalPrefix = "SNAKEPIT_"

// journalWriteWait bounds one datagram's send: a journald that does not
// drain its socket loses lines rather than stalling the daemon.
const journalWriteWait = time.Second

// ErrNoJournal is returned by NewJournalHandler when the socket cannot be
// used.
var ErrNoJournal = errors.New("journal socket unavailable")

// NewLogger is the daemon's logger: the journal's native protocol when
// stderr is connected to the journal (systemd sets $JOURNAL_STREAM to its
// device and inode), else text on stderr.
func NewLogger(stderr io.Writer, level slog.Leveler) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	text := slog.NewTextHandler(stderr, opts)
	if f, ok := stderr.(*os.File); ok && f == os.Stderr {
		if is, _ := journal.StderrIsJournalStream(); is {
			if h, err := NewJournalHandler(JournalSocket, opts); err == nil {
				// A line the socket refuses still reaches the journal,
				// through the stream.
				h.fallback = text
				return slog.New(h)
			}
		}
	}
	return slog.New(text)
}

// JournalHandler is a slog.Handler that sends each record as one datagram
// of the journal's native protocol (systemd.journal-fields(7)): MESSAGE,
// PRIORITY from the level, SYSLOG_IDENTIFIER, and each attribute as a
// field SNAKEPIT_<KEY> (groups joined by _). The journal stamps the time
// itself. A record too large for a datagram goes as a sealed memfd, as
// sd_journal_send does. Not go-systemd's journal.Send: its socket path is
// fixed (tests send to a socket of their own) and a send has no deadline.
type JournalHandler struct {
	j      *journalConn
	level  slog.Leveler
	fields []byte // pre-rendered fields of WithAttrs
	prefix string // field name prefix of WithGroup
	// fallback, if set, gets a record the socket refused.
	fallback slog.Handler
}

type journalConn struct {
	conn *net.UnixConn
	addr *net.UnixAddr
	mu   sync.Mutex // one send at a time: a memfd fallback must not interleave
}

// NewJournalHandler returns a handler sending to the journal socket at
// path (JournalSocket on a systemd host; tests give their own). It fails
// when path is not a socket.
func NewJournalHandler(path string, opts *slog.HandlerOptions) (*JournalHandler, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return nil, fmt.Errorf("%w: %s", ErrNoJournal, path)
	}
	// Unconnected: every datagram is addressed to the path, so a
	// restarted journald gets the next line.
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Net: "unixgram"})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoJournal, err)
	}
	var level slog.Leveler = slog.LevelInfo
	if opts != nil && opts.Level != nil {
		level = opts.Level
	}
	return &JournalHandler{j: &journalConn{conn: c, addr: &net.UnixAddr{Name: path, Net: "unixgram"}}, level: level, prefix: journalPrefix}, nil
}

// Enabled implements slog.Handler.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// WithAttrs implements slog.Handler.
func (h *JournalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.fields = bytes.Clone(h.fields)
	for _, a := range as {
		h2.fields = appendAttr(h2.fields, h.prefix, a)
	}
	if h.fallback != nil {
		h2.fallback = h.fallback.WithAttrs(as)
	}
	return &h2
}

// WithGroup implements slog.Handler.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.prefix = h.prefix + fieldName(name) + "_"
	if h.fallback != nil {
		h2.fallback = h.fallback.WithGroup(name)
	}
	return &h2
}

// Handle implements slog.Handler.
func (h *JournalHandler) Handle(ctx context.Context, r slog.Record) error {
	b := make([]byte, 0, 256+len(h.fields))
	b = appendField(b, "MESSAGE", r.Message)
	b = appendField(b, "PRIORITY", priority(r.Level))
	b = appendField(b, "SYSLOG_IDENTIFIER", "snakepit")
	b = append(b, h.fields...)
	r.Attrs(func(a slog.Attr) bool {
		b = appendAttr(b, h.prefix, a)
		return true
	})
	err := h.j.send(b)
	if err != nil && h.fallback != nil {
		return h.fallback.Handle(ctx, r)
	}
	return err
}

// priority maps a slog level to syslog's: debug 7, info 6, warn 4, error 3.
func priority(l slog.Level) string {
	switch {
	case l >= slog.LevelError:
		return "3"
	case l >= slog.LevelWarn:
		return "4"
	case l >= slog.LevelInfo:
		return "6"
	}
	return "7"
}

func appendAttr(b []byte, prefix string, a slog.Attr) []byte {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return b
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += fieldName(a.Key) + "_"
		}
		for _, ga := range a.Value.Group() {
			b = appendAttr(b, p, ga)
		}
		return b
	}
	return appendField(b, prefix+fieldName(a.Key), a.Value.String())
}

// fieldName makes a journal field name of an attribute key: upper case
// letters, digits and underscores (anything else becomes _).
func fieldName(key string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			return r
		}
		return '_'
	}, key)
}

// appendField appends NAME=value\n, or for a value with a newline the
// protocol's binary form: NAME\n, its length as 64-bit little endian, the
// value, \n.
func appendField(b []byte, name, value string) []byte {
	if !strings.Contains(value, "\n") {
		b = append(b, name...)
		b = append(b, '=')
		b = append(b, value...)
		return append(b, '\n')
	}
	b = append(b, name...)
	b = append(b, '\n')
	b = binary.LittleEndian.AppendUint64(b, uint64(len(value)))
	b = append(b, value...)
	return append(b, '\n')
}

func (j *journalConn) send(msg []byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	_ = j.conn.SetWriteDeadline(time.Now().Add(journalWriteWait))
	_, _, err := j.conn.WriteMsgUnix(msg, nil, j.addr)
	if err == nil || !isTooLarge(err) {
		return err
	}
	// Larger than a datagram may be: pass it as a sealed memfd.
	fd, err := unix.MemfdCreate("journal-message", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), "journal-message")
	defer f.Close()
	if _, err := f.Write(msg); err != nil {
		return err
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW|unix.F_SEAL_WRITE|unix.F_SEAL_SEAL); err != nil {
		return err
	}
	_, _, err = j.conn.WriteMsgUnix(nil, unix.UnixRights(int(f.Fd())), j.addr)
	return err
}

func isTooLarge(err error) bool {
	return errors.Is(err, unix.EMSGSIZE) || errors.Is(err, unix.ENOBUFS)
}
