defmodule SnakepitJail.DaemonTest do
  # SnakepitJail.Daemon against a real daemon that this test starts with its
  # own socket and its own cgroup parent (nothing shared with other users of
  # the host), and stops at the end; every run it made is torn down.
  use ExUnit.Case, async: false

  alias SnakepitJail.{Daemon, JSON}
  alias SnakepitJail.Test.Host

  @moduletag timeout: 120_000

  setup_all do
    full = System.get_env("SNAKEPITD") || Path.join(Path.dirname(Host.bin()), "snakepitd")

    unless File.regular?(full),
      do:
        raise(
          "#{full} missing: snakepit daemon needs the full build (snakepitd) next to snakepit or in $SNAKEPITD"
        )

    tmp = Path.join(System.tmp_dir!(), "snakepit-jail-daemon-#{SnakepitJail.generate_run_id()}")
    File.mkdir_p!(tmp)
    sock = Path.join(tmp, "d.sock")

    parent =
      Path.join(Host.cgroup2_mount(), "snakepit-jail-test-#{SnakepitJail.generate_run_id()}")

    port =
      Port.open({:spawn_executable, Host.bin()}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: [
          "daemon",
          "--socket",
          sock,
          "--cgroup-parent",
          parent,
          "--no-scope",
          "--grace",
          "1s"
        ],
        env: [{~c"SNAKEPITD", String.to_charlist(full)}, {~c"NOTIFY_SOCKET", false}]
      ])

    {:os_pid, os_pid} = Port.info(port, :os_pid)
    daemon = Host.ident(os_pid)

    on_exit(fn ->
      if Host.alive?(daemon), do: System.cmd("kill", ["-TERM", Integer.to_string(os_pid)])
      Host.eventually(fn -> not Host.alive?(daemon) end, 20_000)
      if Host.alive?(daemon), do: System.cmd("kill", ["-KILL", Integer.to_string(os_pid)])
      File.rm_rf(tmp)
      # The daemon removes its runs at shutdown; the parent is ours to remove.
      Host.eventually(fn -> File.rmdir(parent) == :ok or not File.exists?(parent) end, 10_000)
    end)

    up = Host.eventually(fn -> match?({:ok, _}, Daemon.status(socket: sock)) end, 30_000)
    assert up, "the daemon did not answer on #{sock}"
    {:ok, sock: sock, parent: parent, daemon_pid: os_pid}
  end

  test "status", ctx do
    assert {:ok, %{"pid" => pid, "mode" => "configured", "run_parent" => parent}} =
             Daemon.status(socket: ctx.sock)

    assert pid == ctx.daemon_pid and parent == ctx.parent
  end

  test "a run with a worker that leaves a setsid grandchild; DELETE leaves nothing", ctx do
    rid = SnakepitJail.generate_run_id()
    on_exit(fn -> Daemon.delete_run(rid, socket: ctx.sock, grace: 0) end)

    assert {:ok, %{"id" => ^rid, "state" => "active", "cgroup" => cgroup}} =
             Daemon.create_run(%{id: rid}, socket: ctx.sock)

    assert cgroup == Path.join(ctx.parent, "snakepit-#{rid}") and File.dir?(cgroup)

    assert {:ok, %{"id" => wid, "pid" => wpid, "state" => "running"}} =
             Daemon.start_worker(
               rid,
               %{
                 argv: [
                   "/bin/sh",
                   "-c",
                   "setsid sleep 600 </dev/null >/dev/null 2>&1 & exec sleep 600"
                 ],
                 env: %{"PATH" => "/usr/bin:/bin"}
               },
               socket: ctx.sock
             )

    assert {:ok, %{"workers" => [%{"id" => ^wid, "pid" => ^wpid}]}} =
             Daemon.get_run(rid, socket: ctx.sock)

    assert {:ok, runs} = Daemon.list_runs(socket: ctx.sock)
    assert rid in Enum.map(runs, & &1["id"])

    # The worker and its grandchild, both marked with the run ID.
    marked = Host.eventually(fn -> (m = Host.marked_pids(rid)) |> length() >= 2 && m end)
    assert marked && wpid in marked
    followed = Enum.map(marked, &Host.ident/1)

    assert {:ok, %{"id" => ^rid, "terminated" => n}} =
             Daemon.delete_run(rid, socket: ctx.sock, grace: 1_000)

    assert n >= 2
    assert {:ok, _} = Host.wait_all_gone(followed, [rid], [cgroup], 10_000)
    assert {:error, %{status: 404, code: "not_found"}} = Daemon.get_run(rid, socket: ctx.sock)
  end

  test "API errors come back with their code", ctx do
    assert {:error, %{status: 400, code: "invalid_run_id", message: msg}} =
             Daemon.create_run(%{id: "BAD"}, socket: ctx.sock)

    assert msg =~ "invalid run ID"

    assert {:error, %{status: 404, code: "not_found"}} =
             Daemon.get_run("zzzzzzz", socket: ctx.sock)

    assert {:error, %{status: 400, code: "invalid_json"}} =
             Daemon.create_run(%{bogus_field: 1}, socket: ctx.sock)

    assert {:error, {:connect, :enoent}} = Daemon.status(socket: "/nonexistent/d.sock")
  end

  test "a worker start waits for readiness beyond the call's :timeout", ctx do
    rid = SnakepitJail.generate_run_id()
    on_exit(fn -> Daemon.delete_run(rid, socket: ctx.sock, grace: 0) end)
    assert {:ok, _} = Daemon.create_run(%{id: rid}, socket: ctx.sock)
    t0 = System.monotonic_time(:millisecond)

    # Ready after 2 s; the daemon may take 50 s + the ready_timeout to
    # answer: a client giving up at 1 s would have it kill the worker.
    assert {:ok, %{"state" => "running", "ready" => %{"line" => "READY"}}} =
             Daemon.start_worker(
               rid,
               %{
                 argv: ["/bin/sh", "-c", "sleep 2; echo READY; exec sleep 600"],
                 env: %{"PATH" => "/usr/bin:/bin"},
                 ready: %{line: "^READY$"},
                 ready_timeout: "20s"
               },
               socket: ctx.sock,
               timeout: 1_000
             )

    assert System.monotonic_time(:millisecond) - t0 >= 1_900

    assert {:ok, %{"workers" => [%{"state" => "running"}]}} =
             Daemon.get_run(rid, socket: ctx.sock)
  end

  test "a DELETE waits out its grace beyond the call's :timeout", ctx do
    rid = SnakepitJail.generate_run_id()
    on_exit(fn -> Daemon.delete_run(rid, socket: ctx.sock, grace: 0) end)
    assert {:ok, _} = Daemon.create_run(%{id: rid}, socket: ctx.sock)

    assert {:ok, %{"pid" => wpid}} =
             Daemon.start_worker(
               rid,
               %{argv: ["/bin/sh", "-c", "trap '' TERM; exec sleep 600"]},
               socket: ctx.sock
             )

    # SIGTERM is ignored once the shell has exec'd sleep (SIG_IGN stays).
    assert Host.eventually(fn -> Host.cmdline(wpid) == "sleep 600" end)

    assert {:ok, %{"id" => ^rid, "killed" => true}} =
             Daemon.delete_run(rid, socket: ctx.sock, grace: 2_000, timeout: 1_000)
  end

  test "an empty, cut short or malformed reply is {:error, {:recv, :bad_response}}" do
    replies = [
      "",
      "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{\"a\": 1",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n{\"a\"",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "HTTP/1.1 OK\r\n\r\n{}",
      "hello\r\n\r\n{}"
    ]

    for reply <- replies do
      assert canned(reply, &Daemon.status/1) == {:error, {:recv, :bad_response}},
             "reply #{inspect(reply)}"
    end

    # A whole reply still reads, chunked or not.
    assert canned(
             "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n: 1\r\n1\r\n}\r\n0\r\n\r\n",
             &Daemon.status/1
           ) == {:ok, %{"a" => 1}}

    assert canned("HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno", &Daemon.status/1) ==
             {:error, %{status: 404, code: nil, message: "no"}}
  end

  # One request to a server on a socket of its own that answers `reply`
  # verbatim and closes.
  defp canned(reply, call) do
    path = Path.join(System.tmp_dir!(), "sp-jail-canned-#{SnakepitJail.generate_run_id()}.sock")

    {:ok, l} =
      :gen_tcp.listen(0, [:binary, active: false, ifaddr: {:local, String.to_charlist(path)}])

    try do
      server =
        Task.async(fn ->
          {:ok, s} = :gen_tcp.accept(l, 10_000)
          {:ok, _request} = :gen_tcp.recv(s, 0, 10_000)
          :ok = :gen_tcp.send(s, reply)
          :gen_tcp.close(s)
        end)

      res = call.(socket: path, timeout: 10_000)
      Task.await(server)
      res
    after
      :gen_tcp.close(l)
      File.rm(path)
    end
  end

  test "JSON round trip" do
    v = %{"a" => [1, -2.5, true, false, nil, "x\"y\\z\n\u00e9\u{1F40D}"], "b" => %{}, "c" => []}
    assert JSON.decode(JSON.encode!(v)) == {:ok, v}

    assert JSON.decode(~s({"s": "\\ud83d\\udc0d \\u00e9", "n": 1e3})) ==
             {:ok, %{"s" => "\u{1F40D} é", "n" => 1.0e3}}

    assert JSON.decode("{") == {:error, :invalid_json}
    assert JSON.decode("[1] x") == {:error, :trailing_data}
  end
end
