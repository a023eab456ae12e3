package jail

import (
	"errors"
	"io/fs"
	"os/exec"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// A failure in the helper reaches the starter as the error the forked child
// would have given: an exec failure is an *ExecError with its errno, which
// the daemon answers as a bad request.
func TestExecFailureRoundTrip(t *testing.T) {
	err := decodeExecFailure(encodeExecFailure("exec", unix.EACCES, "/opt/x"))
	var ee *ExecError
	if !errors.As(err, &ee) || ee.Path != "/opt/x" || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("exec EACCES came back as %#v", err)
	}
	err = decodeExecFailure(encodeExecFailure("chdir", unix.ENOENT, "/no/such dir"))
	var pe *fs.PathError
	if !errors.As(err, &pe) || pe.Op != "chdir" || pe.Path != "/no/such dir" || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("chdir ENOENT came back as %#v", err)
	}
}

// WrapIdentity moves the credential and the directory to the helper's
// arguments; a cmd without a credential is left alone.
func TestWrapIdentity(t *testing.T) {
	cmd := exec.Command("/bin/true", "a")
	cmd.Dir = "/tmp"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1001, Groups: []uint32{5, 6}}}
	r, w, err := WrapIdentity(cmd, "/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	want := []string{"snakepit", ExecSubcommand, "--uid", "1000", "--gid", "1001", "--groups", "5,6", "--parent"}
	for i, a := range want {
		if cmd.Args[i] != a {
			t.Fatalf("args %q, want them to start %q", cmd.Args, want)
		}
	}
	tail := cmd.Args[len(cmd.Args)-6:]
	if got := []string{tail[0], tail[1], tail[2], tail[3], tail[4], tail[5]}; got[0] != "--dir" || got[1] != "/tmp" || got[2] != "--" || got[3] != "/bin/true" || got[4] != "/bin/true" || got[5] != "a" {
		t.Fatalf("args end %q", tail)
	}
	if cmd.Path != "/proc/self/exe" || cmd.Dir != "" || cmd.SysProcAttr.Credential != nil || len(cmd.ExtraFiles) != 1 || cmd.ExtraFiles[0] != w {
		t.Fatalf("cmd not rewritten: path %q dir %q credential %v extra %v", cmd.Path, cmd.Dir, cmd.SysProcAttr.Credential, cmd.ExtraFiles)
	}
	plain := exec.Command("/bin/true")
	if r, w, err := WrapIdentity(plain, "/proc/self/exe"); r != nil || w != nil || err != nil || plain.Path != "/bin/true" {
		t.Fatal("a cmd without a credential was rewritten")
	}
}
