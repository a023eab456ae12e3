package kfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestReadAll(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{0, 1, 511, 512, 513, 70000} {
		want := bytes.Repeat([]byte("x"), size)
		p := filepath.Join(dir, "f")
		if err := os.WriteFile(p, want, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := ReadAll(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("size %d: got %d bytes, %v", size, len(got), err)
		}
	}
	// A procfs file reports size 0 and is read to EOF all the same.
	if b, err := ReadAll("/proc/self/status"); err != nil || !bytes.Contains(b, []byte("Pid:")) {
		t.Errorf("/proc/self/status: %q, %v", b, err)
	}
	_, err := ReadAll(filepath.Join(dir, "missing"))
	var pe *fs.PathError
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) || pe.Op != "open" {
		t.Errorf("missing file: %v, want an open *fs.PathError matching fs.ErrNotExist", err)
	}
}

func TestRead(t *testing.T) {
	var buf [16]byte
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("populated 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := Read(p, buf[:])
	if err != nil || string(buf[:n]) != "populated 1\n" {
		t.Errorf("Read = %q, %v", buf[:n], err)
	}
	if _, err := Read(t.TempDir(), buf[:]); !errors.Is(err, unix.EISDIR) {
		t.Errorf("reading a directory: %v, want EISDIR", err)
	}
}
