package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	snakepit "github.com/snakepit/snakepit"
	"github.com/snakepit/snakepit/api"
	"github.com/snakepit/snakepit/reaper"
)

// cmdLibserve is the daemon round trip's floor: the three library calls of
// a round trip (Create, Start, Teardown) behind a bare net/http server on a
// unix socket, in a process of its own that reaps its children as the
// daemon does (a subreaper with a Reaper), speaking enough of the API for
// package client. Nothing else of the daemon is there: no peer checks,
// quotas, limits on connections, logging, events or metrics. Whatever the
// daemon costs beyond this row is its own; what this row costs beyond the
// in-process library is the HTTP exchange and the process boundary.
func cmdLibserve(args []string) int {
	fs := flag.NewFlagSet("libserve", flag.ContinueOnError)
	sock := fs.String("socket", "", "unix socket to serve on")
	parent := fs.String("parent", "", "cgroup parent of the runs")
	if err := fs.Parse(args); err != nil || *sock == "" || *parent == "" {
		return 2
	}
	if err := libserve(*sock, *parent); err != nil {
		fmt.Fprintf(os.Stderr, "spbench libserve: %v\n", err)
		return 1
	}
	return 0
}

func libserve(sock, parent string) error {
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	if err := reaper.SetSubreaper(); err != nil {
		return err
	}
	rp := reaper.New(nil)
	rp.Start()
	defer rp.Stop()
	_ = os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	runs := map[string]*snakepit.Run{}
	take := func(id string) *snakepit.Run {
		mu.Lock()
		defer mu.Unlock()
		r := runs[id]
		delete(runs, id)
		return r
	}
	reply := func(w http.ResponseWriter, code int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		n := len(runs)
		mu.Unlock()
		reply(w, http.StatusOK, api.Status{PID: os.Getpid(), Runs: n})
	})
	mux.HandleFunc("POST "+api.PathRuns, func(w http.ResponseWriter, req *http.Request) {
		var body api.CreateRunRequest
		if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r, err := snakepit.Create(req.Context(), snakepit.Options{CgroupParent: parent, Reaper: rp})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		mu.Lock()
		runs[r.ID()] = r
		mu.Unlock()
		reply(w, http.StatusCreated, api.Run{ID: r.ID(), State: api.RunActive, Workers: []api.Worker{}})
	})
	mux.HandleFunc("POST "+api.PathRuns+"/{id}/workers", func(w http.ResponseWriter, req *http.Request) {
		var body api.StartWorkerRequest
		if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		r := runs[req.PathValue("id")]
		mu.Unlock()
		if r == nil {
			http.NotFound(w, req)
			return
		}
		wk, err := r.Start(req.Context(), snakepit.Command{Args: body.Argv, Env: []string{"PATH=/usr/bin:/bin"}, Dir: "/"})
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		reply(w, http.StatusCreated, api.Worker{ID: wk.WID, PID: wk.PID(), Argv: body.Argv, State: api.WorkerRunning})
	})
	mux.HandleFunc("DELETE "+api.PathRuns+"/{id}", func(w http.ResponseWriter, req *http.Request) {
		r := take(req.PathValue("id"))
		if r == nil {
			http.NotFound(w, req)
			return
		}
		td := api.Teardown{ID: r.ID()}
		if _, err := r.Teardown(context.WithoutCancel(req.Context()), 0); err != nil {
			td.Error = err.Error()
		}
		reply(w, http.StatusOK, td)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	err = srv.Serve(ln)
	mu.Lock()
	left := runs
	runs = nil
	mu.Unlock()
	for _, r := range left {
		tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _ = r.Teardown(tctx, 0)
		cancel()
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// startLibserve starts `spbench libserve` as a process of its own, as
// startDaemon starts the daemon.
func startLibserve(ctx context.Context, c *config, name string) (*daemonProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return startServer(ctx, c, name, func(socket, parent string) []string {
		return []string{self, "libserve", "--socket", socket, "--parent", parent}
	})
}
