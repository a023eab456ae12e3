//go:build linux

package guardian

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/snakepit/snakepit/internal/testenv"
)

// threadsEnv makes the test binary a process with that many threads of its
// own (TestHelperThreads): it prints their thread IDs, one per line, and
// ends thread i (its goroutine returns while locked to it) when it reads
// line i on stdin.
const threadsEnv = "SNAKEPIT_TEST_THREADS"

func TestHelperThreads(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv(threadsEnv))
	if n == 0 {
		t.Skip("run by the death notice tests")
	}
	ends := make([]chan struct{}, n)
	tids := make([]chan int, n)
	for i := range ends {
		ends[i], tids[i] = make(chan struct{}), make(chan int, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread ends with us
			tids[i] <- unix.Gettid()
			<-ends[i]
		}()
	}
	for i := range ends {
		fmt.Println(<-tids[i])
	}
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if i, err := strconv.Atoi(sc.Text()); err == nil && i < n {
			close(ends[i])
		}
	}
	select {}
}

// threads starts the helper with n threads of its own and returns it, a
// writer that ends thread i when sent line i, and their thread IDs.
func threads(t *testing.T, n int) (*exec.Cmd, io.Writer, []int) {
	t.Helper()
	cmd := testenv.HelperProcess("TestHelperThreads", threadsEnv+"="+strconv.Itoa(n))
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	testenv.StartHelper(t, cmd)
	r := bufio.NewReader(out)
	var tids []int
	for range n {
		line, err := r.ReadString('\n')
		tid, _ := strconv.Atoi(strings.TrimSpace(line))
		if err != nil || tid <= 0 {
			t.Fatalf("helper: %q, %v", line, err)
		}
		tids = append(tids, tid)
	}
	return cmd, in, tids
}

func requireThreadNotice(t *testing.T) {
	t.Helper()
	if !ThreadNotice() {
		testenv.Missing(t, "needs PIDFD_THREAD (Linux 6.9)")
	}
}

// watching is the threads d watches, oldest first.
func (d *deathNotice) watching() []int {
	d.mu.Lock()
	defer d.mu.Unlock()
	var tids []int
	for tid := range d.watched {
		tids = append(tids, tid)
	}
	slices.Sort(tids)
	return tids
}

// A thread of the owner that ends on its own is no death notice: the
// watch moves on to another thread, and then to none.
func TestDeathNoticeIgnoresThreadsEndingAlone(t *testing.T) {
	requireThreadNotice(t)
	cmd, in, tids := threads(t, 3)
	pid := cmd.Process.Pid
	d := newDeathNotice(pid)
	// Only the helper's own threads are to be watched: mark the others
	// (the runtime's) as seen.
	mine := map[int]bool{}
	for _, tid := range tids {
		mine[tid] = true
	}
	ents, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if tid, _ := strconv.Atoi(e.Name()); !mine[tid] {
			d.tried[tid] = true
		}
	}
	index := map[int]int{}
	for i, tid := range tids {
		if tid != pid { // a goroutine on the main thread: never ended
			index[tid] = i
		}
	}
	if len(index) == 0 {
		t.Fatal("no thread of the helper's own to end")
	}
	res := make(chan bool, 1)
	go func() { res <- d.Wait() }()
	notDead := func() {
		select {
		case <-res:
			t.Fatal("a thread that ended alone was taken for the owner's death")
		default:
		}
	}
	// The oldest threads are watched first, and the runtime's are marked
	// seen: the helper's own are watched until they are all gone. End
	// them one by one.
	for range index {
		w := -1
		testenv.Eventually(t, 10*time.Second, "a thread of the helper's own watched", func() bool {
			for _, tid := range d.watching() {
				if _, ok := index[tid]; ok {
					w = tid
					return true
				}
			}
			return false
		})
		if _, err := fmt.Fprintln(in, index[w]); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "the watch dropped thread "+strconv.Itoa(w), func() bool {
			notDead()
			return !slices.Contains(d.watching(), w)
		})
	}
	notDead()
	d.Close()
	if <-res {
		t.Fatal("Wait after Close reported a death")
	}
}

// The SIGKILL of the owner is noticed.
func TestDeathNoticeSeesKill(t *testing.T) {
	requireThreadNotice(t)
	cmd, _, _ := threads(t, 2)
	d := newDeathNotice(cmd.Process.Pid)
	defer d.Close()
	res := make(chan bool, 1)
	go func() { res <- d.Wait() }()
	testenv.Eventually(t, 10*time.Second, "a thread watched", func() bool { return len(d.watching()) != 0 })
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case dying := <-res:
		if !dying {
			t.Fatal("Wait returned without a death")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("SIGKILL of the owner not noticed within 10s")
	}
}
