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

  test "JSON round trip" do
    v = %{"a" => [1, -2.5, true, false, nil, "x\"y\\z\n\u00e9\u{1F40D}"], "b" => %{}, "c" => []}
    assert JSON.decode(JSON.encode!(v)) == {:ok, v}

    assert JSON.decode(~s({"s": "\\ud83d\\udc0d \\u00e9", "n": 1e3})) ==
             {:ok, %{"s" => "\u{1F40D} é", "n" => 1.0e3}}

    assert JSON.decode("{") == {:error, :invalid_json}
    assert JSON.decode("[1] x") == {:error, :trailing_data}
  end
end
