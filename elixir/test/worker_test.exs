defmodule SnakepitJail.WorkerTest do
  # SnakepitJail.Worker against the real snakepit, in cgroup and POSIX mode:
  # bad input, the teardown paths, events, env and dir.
  use ExUnit.Case, async: false

  alias SnakepitJail.{Error, Worker}
  alias SnakepitJail.Test.Host

  @moduletag timeout: 120_000

  # A command that leaves a setsid grandchild (stdio on /dev/null) behind.
  @leaver "setsid sleep 600 </dev/null >/dev/null 2>&1 &"

  setup do
    # Unlinked workers (Worker.start) where a test stops them with a crash
    # reason; the rest are linked and we trap their exits.
    Process.flag(:trap_exit, true)
    test_pid = self()
    # Outlives the test process, for on_exit.
    {:ok, ids} = Agent.start(fn -> [] end)
    on_exit(fn -> cleanup(ids) end)
    {:ok, ids: ids, owner: test_pid}
  end

  for mode <- [:cgroup, :posix] do
    @mode mode

    describe "#{mode} mode, bad input:" do
      test "a bad run ID: the CLI's message, nothing left", ctx do
        assert {:error, %Error{} = e} =
                 start(ctx, @mode, cmd: ["sleep", "600"], run_id: "BAD-id!")

        assert e.reason == :invalid_run_id and e.status == 120
        assert e.message =~ ~s(invalid run ID: "BAD-id!")
        assert Host.run_cgroups(["BAD-id!"]) == []
        assert Host.procs_by_run_ids(["BAD-id!"]) == []
      end

      test "a missing program: the CLI's message, nothing left", ctx do
        assert {:error, %Error{} = e} = start(ctx, @mode, cmd: ["/nonexistent/program", "--x"])
        assert e.reason == :not_found and e.status == 127
        assert e.message =~ "/nonexistent/program"
        assert e.message =~ "no such file or directory"
        assert_gone(e.run_id)
      end

      test "a bad limit value: the CLI's usage message, nothing left", ctx do
        assert {:error, %Error{} = e} =
                 start(ctx, @mode, cmd: ["sleep", "600"], limits: [memory_max: "64Q"])

        assert e.reason == :usage and e.status == 2
        assert e.message =~ ~s(snakepit: --memory-max: invalid limit: size "64Q")
        assert_gone(e.run_id)
      end

      test "an unknown limit: refused before anything runs", ctx do
        rid = SnakepitJail.generate_run_id()

        assert {:error, %Error{} = e} =
                 start(ctx, @mode, cmd: ["sleep", "600"], run_id: rid, limits: [bogus_max: 3])

        assert e.reason == :bad_option and e.status == nil
        assert e.message =~ "unknown limit :bogus_max"
        assert Host.procs_by_run_ids([rid]) == [] and Host.run_cgroups([rid]) == []
      end

      test "a limit this host cannot enforce: the CLI's message, nothing left", ctx do
        res = start(ctx, @mode, cmd: ["sleep", "600"], limits: [memory_max: "64M"])

        cond do
          @mode == :posix ->
            # POSIX mode and a limit contradict each other: a usage error.
            assert {:error, %Error{} = e} = res
            assert e.reason == :usage and e.status == 2
            assert e.message =~ ~r/^snakepit: .*memory/
            assert_gone(e.run_id)

          "memory" not in Host.root_controllers() ->
            assert {:error, %Error{} = e} = res
            assert e.reason == :snakepit_failure and e.status == 125
            assert e.message =~ ~r/^snakepit: .*memory/
            assert_gone(e.run_id)

          true ->
            # A pure cgroup v2 host with the memory controller: it works.
            assert {:ok, pid, info} = res

            assert File.read!(Path.join(Host.cgroup_dir(info.cgroup), "memory.max")) ==
                     "67108864\n"

            :ok = Worker.stop(pid)
            assert_gone(info.run_id)
        end
      end

      test "not ready in time: {:error, :not_ready}, the run torn down", ctx do
        t0 = System.monotonic_time(:millisecond)

        assert {:error, %Error{} = e} =
                 start(ctx, @mode,
                   cmd: ["sh", "-c", "#{@leaver} exec sleep 600"],
                   ready_line: "^NEVER$",
                   ready_timeout: 300
                 )

        assert e.reason == :not_ready and e.status == 119
        assert e.message =~ "not ready in time"
        assert System.monotonic_time(:millisecond) - t0 < 10_000
        assert_gone(e.run_id)
      end

      test "the command exits before it is ready: its status and output", ctx do
        assert {:error, %Error{} = e} =
                 start(ctx, @mode,
                   cmd: ["sh", "-c", "#{@leaver} echo oops >&2; exit 3"],
                   ready_line: "^UP$",
                   ready_timeout: 10_000
                 )

        assert e.reason == :exited and e.status == 3
        assert "oops" in e.output
        assert_gone(e.run_id)
      end

      test "a missing :dir", ctx do
        assert {:error, %Error{reason: :bad_option} = e} =
                 start(ctx, @mode, cmd: ["true"], dir: "/nonexistent/dir")

        assert e.message =~ "/nonexistent/dir"
      end
    end

    describe "#{mode} mode:" do
      test "start_link returns when ready, with the run ID and the command's PID", ctx do
        assert {:ok, pid, info} =
                 start(ctx, @mode,
                   cmd: ["sh", "-c", "#{@leaver} sleep 0.3; echo UP; exec sleep 600"],
                   ready_line: "^UP$",
                   ready_timeout: 10_000,
                   output: :owner
                 )

        assert SnakepitJail.valid_run_id?(info.run_id)
        assert info.ready_line == "UP"
        assert_received {:snakepit_jail, ^pid, {:output, "UP"}}
        assert_received {:snakepit_jail, ^pid, {:ready, ^info}}
        # os_pid is the command (the shell that execs sleep), not the wrapper.
        assert Host.eventually(fn -> Host.cmdline(info.os_pid) == "sleep 600" end),
               "pid #{info.os_pid}: #{Host.cmdline(info.os_pid)}"

        assert Host.cmdline(info.wrapper_pid) =~ ~r/snakepit run .*--run-id #{info.run_id}/
        assert Host.marked_pids(info.run_id) |> Enum.member?(info.os_pid)

        if @mode == :cgroup do
          assert info.cgroup =~ "snakepit-#{info.run_id}"
          assert Host.pid_cgroup(info.os_pid) == info.cgroup
        else
          assert info.cgroup == nil
        end

        :ok = Worker.stop(pid)
        assert_gone(info.run_id)
      end

      test "stop/1 (terminate with :shutdown) is graceful: SIGTERM, and the command exits by itself",
           ctx do
        {:ok, pid, info} =
          start(ctx, @mode,
            cmd: [
              "sh",
              "-c",
              "trap 'echo got-term; exit 0' TERM; #{@leaver} echo UP; while :; do sleep 0.05; done"
            ],
            ready_line: "^UP$",
            grace: 5_000,
            output: :owner
          )

        t0 = System.monotonic_time(:millisecond)
        :ok = Worker.stop(pid)
        took = System.monotonic_time(:millisecond) - t0
        assert_received {:snakepit_jail, ^pid, {:output, "got-term"}}
        assert_received {:snakepit_jail, ^pid, {:exit, 0}}
        assert took < 5_000, "a command that exits on SIGTERM waited out the grace (#{took} ms)"
        assert_gone(info.run_id)
      end

      test "the grace is enforced: a command that ignores SIGTERM is killed when it ends", ctx do
        {:ok, pid, info} =
          start(ctx, @mode,
            cmd: ["sh", "-c", "trap '' TERM; #{@leaver} echo UP; while :; do sleep 0.05; done"],
            ready_line: "^UP$",
            grace: 1_000,
            output: :owner
          )

        t0 = System.monotonic_time(:millisecond)
        :ok = Worker.stop(pid)
        took = System.monotonic_time(:millisecond) - t0
        assert_received {:snakepit_jail, ^pid, {:exit, 137}}
        assert took >= 950 and took < 6_000, "took #{took} ms with a 1 s grace"
        assert_gone(info.run_id)
      end

      test "a crash (terminate with another reason) is immediate: SIGKILL, no grace", ctx do
        {:ok, pid, info} =
          start(ctx, @mode,
            cmd: [
              "sh",
              "-c",
              "trap 'echo got-term; exit 0' TERM; #{@leaver} echo UP; while :; do sleep 0.05; done"
            ],
            ready_line: "^UP$",
            grace: 10_000,
            output: :owner,
            link: false
          )

        t0 = System.monotonic_time(:millisecond)
        ref = Process.monitor(pid)
        GenServer.stop(pid, :boom)
        assert_receive {:DOWN, ^ref, _, _, :boom}
        took = System.monotonic_time(:millisecond) - t0
        assert_received {:snakepit_jail, ^pid, {:exit, 137}}
        refute_received {:snakepit_jail, ^pid, {:output, "got-term"}}
        assert took < 5_000
        assert_gone(info.run_id)
      end

      test "kill/1 tears the run down at once", ctx do
        {:ok, pid, info} =
          start(ctx, @mode,
            cmd: ["sh", "-c", "#{@leaver} exec sleep 600"],
            grace: 10_000,
            output: :owner
          )

        :ok = Worker.kill(pid)
        assert_received {:snakepit_jail, ^pid, {:exit, 137}}
        refute Process.alive?(pid)
        assert_gone(info.run_id)
      end

      test "Process.exit(pid, :kill): the Port closes, the wrapper tears the run down", ctx do
        {:ok, pid, info} =
          start(ctx, @mode,
            cmd: ["sh", "-c", "#{@leaver} exec sleep 600"],
            grace: 2_000,
            link: false
          )

        # start/2 returns once the command is started; its shell forks the
        # setsid'd sleep afterwards.
        marked =
          Host.eventually(fn ->
            m = Host.marked_pids(info.run_id)
            length(m) >= 2 && m
          end)

        assert marked,
               "the sleep and its setsid grandchild: #{inspect(Host.marked_pids(info.run_id))}"

        followed = Enum.map([info.os_pid, info.wrapper_pid | marked], &Host.ident/1)
        Process.exit(pid, :kill)
        assert_gone(info.run_id, followed)
      end

      test "the command exits on its own: {:exit, status}, what it left is torn down", ctx do
        {:ok, pid, info} =
          start(ctx, @mode,
            cmd: ["sh", "-c", "#{@leaver} echo UP; read x; exit 7"],
            ready_line: "^UP$",
            link: false
          )

        ref = Process.monitor(pid)
        followed = info.run_id |> Host.marked_pids() |> Enum.map(&Host.ident/1)
        assert length(followed) >= 2
        :ok = Worker.send_input(pid, "go\n")
        assert_receive {:snakepit_jail, ^pid, {:exit, 7}}, 10_000
        assert_receive {:DOWN, ^ref, _, _, {:exit_status, 7}}
        assert_gone(info.run_id, followed)
      end

      test "env and dir reach the command; stdin is the Port", ctx do
        {:ok, pid, info} =
          start(ctx, @mode,
            cmd: [
              "sh",
              "-c",
              ~S|echo "env=$FOO dir=$(pwd) id=$SNAKEPIT_RUN_ID"; echo UP; read l; echo "got $l"; exec sleep 600|
            ],
            env: [{"FOO", "bar baz"}],
            dir: "/tmp",
            ready_line: "^UP$",
            output: :owner
          )

        rid = info.run_id
        assert_received {:snakepit_jail, ^pid, {:output, "env=bar baz dir=/tmp id=" <> ^rid}}
        :ok = Worker.send_input(pid, "hello\n")
        assert_receive {:snakepit_jail, ^pid, {:output, "got hello"}}, 5_000
        :ok = Worker.stop(pid)
        assert_gone(info.run_id)
      end

      test "ready: :notify", ctx do
        script = ~S"""
        import os, socket, time
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        time.sleep(0.2)
        s.sendto(b"READY=1\nSTATUS=serving", os.environ["NOTIFY_SOCKET"])
        time.sleep(600)
        """

        t0 = System.monotonic_time(:millisecond)

        {:ok, pid, info} =
          start(ctx, @mode,
            cmd: ["/usr/bin/python3", "-c", script],
            ready: :notify,
            ready_timeout: 10_000
          )

        assert System.monotonic_time(:millisecond) - t0 >= 200
        assert Host.cmdline(info.os_pid) =~ "/usr/bin/python3 -c"
        :ok = Worker.stop(pid)
        assert_gone(info.run_id)
      end
    end
  end

  # Not the kernel's OOM kill (this needs the memory controller, see the
  # :memory_controller test): the wrapper's event line, as snakepit prints
  # it, becomes an {:oom, line} message; a line for another run does not.
  test "the wrapper's OOM and pids.max lines become messages to the owner", ctx do
    rid = SnakepitJail.generate_run_id()
    oom = "snakepit: run #{rid}: out of memory: the kernel killed 2 process(es) (memory.max 48M)"
    pids = "snakepit: run #{rid}: pids.max (16) reached: 3 fork(s) refused"
    other = "snakepit: run zzzzzzz: out of memory: whole-run OOM kill (memory.oom.group)"

    {:ok, pid, _} =
      start(ctx, :cgroup,
        run_id: rid,
        cmd: [
          "sh",
          "-c",
          "echo UP; echo '#{oom}' >&2; echo '#{pids}' >&2; echo '#{other}' >&2; exec sleep 600"
        ],
        ready_line: "^UP$",
        output: :owner
      )

    assert_receive {:snakepit_jail, ^pid, {:oom, ^oom}}, 5_000
    assert_receive {:snakepit_jail, ^pid, {:pids_max, ^pids}}, 5_000
    assert_receive {:snakepit_jail, ^pid, {:snakepit, ^other}}, 5_000
    :ok = Worker.stop(pid)
  end

  @tag :memory_controller
  test "a real OOM kill in the run becomes {:oom, line}", ctx do
    {:ok, pid, info} =
      start(ctx, :cgroup,
        cmd: [
          "/usr/bin/python3",
          "-c",
          "print('UP', flush=True); import time; time.sleep(0.5); b = bytearray(256 << 20); time.sleep(600)"
        ],
        limits: [memory_max: "32M"],
        ready_line: "^UP$",
        output: :owner
      )

    assert_receive {:snakepit_jail, ^pid, {:oom, line}}, 20_000
    assert line =~ "snakepit: run #{info.run_id}: out of memory"
  end

  test "the command's own exit 2, 125 or 127 before it is ready is :exited, not snakepit's",
       ctx do
    for status <- [2, 125, 127] do
      assert {:error, %Error{} = e} =
               start(ctx, :cgroup,
                 cmd: ["sh", "-c", "echo going; exit #{status}"],
                 ready_line: "^UP$",
                 ready_timeout: 10_000
               )

      assert {e.reason, e.status} == {:exited, status}
      assert "going" in e.output
      assert_gone(e.run_id)
    end
  end

  test "kill/1 of a run made under a --cgroup-parent given in :extra_args", ctx do
    parent = Path.join(Host.cgroup2_mount(), "sptest-jail-#{SnakepitJail.generate_run_id()}")
    rid = SnakepitJail.generate_run_id()

    on_exit(fn ->
      System.cmd(Host.bin(), ["kill", "--grace", "0s", "--cgroup-parent", parent, rid],
        stderr_to_stdout: true
      )

      remove_cgroup(parent)
    end)

    {:ok, pid, info} =
      start(ctx, :cgroup,
        run_id: rid,
        cmd: ["sh", "-c", "#{@leaver} exec sleep 600"],
        grace: 10_000,
        extra_args: ["--cgroup-parent", parent],
        output: :owner
      )

    assert Host.cgroup_dir(info.cgroup) == Path.join(parent, "snakepit-#{rid}")
    t0 = System.monotonic_time(:millisecond)
    log = ExUnit.CaptureLog.capture_log(fn -> :ok = Worker.kill(pid) end)
    took = System.monotonic_time(:millisecond) - t0
    # `snakepit kill` found the run (SIGKILL at once), not "no such run".
    assert_received {:snakepit_jail, ^pid, {:exit, 137}}
    refute log =~ "snakepit kill exited"
    assert took < 5_000, "kill/1 took #{took} ms"
    assert_gone(rid)
  end

  describe "a `snakepit kill` that fails:" do
    setup ctx do
      # snakepit itself for `run`; for `kill`, FAKE_KILL says what it does
      # (its PIDs go to FAKE_KILL_PIDS, for the cleanup).
      dir = Path.join(System.tmp_dir!(), "sp-jail-fake-#{SnakepitJail.generate_run_id()}")
      File.mkdir_p!(dir)
      fake = Path.join(dir, "snakepit")
      pids = Path.join(dir, "kill-pids")

      File.write!(fake, """
      #!/bin/sh
      if [ "$1" = kill ]; then
        echo $$ >> "$FAKE_KILL_PIDS"
        [ "$FAKE_KILL" = hang ] && exec sleep 600
        echo "snakepit: no such run (fake)" >&2
        exit 118
      fi
      exec "#{Host.bin()}" "$@"
      """)

      File.chmod!(fake, 0o755)

      on_exit(fn ->
        for pid <- pids |> File.read!() |> String.split(),
            Host.cmdline(pid) == "sleep 600",
            do: System.cmd("kill", ["-KILL", pid])

        File.rm_rf!(dir)
      end)

      File.write!(pids, "")
      Map.merge(ctx, %{fake: fake, pids: pids})
    end

    test "118 (no such run) while the wrapper runs: the Port is closed at once", ctx do
      {:ok, pid, info} =
        start(ctx, :cgroup,
          snakepit: ctx.fake,
          env: %{"FAKE_KILL" => "118", "FAKE_KILL_PIDS" => ctx.pids},
          cmd: ["sh", "-c", "#{@leaver} exec sleep 600"],
          grace: 0
        )

      t0 = System.monotonic_time(:millisecond)
      log = ExUnit.CaptureLog.capture_log(fn -> :ok = Worker.kill(pid) end)
      took = System.monotonic_time(:millisecond) - t0
      assert log =~ "snakepit kill exited 118"
      assert took < 5_000, "kill/1 took #{took} ms"
      # The wrapper saw EOF on its stdin and tore the run down.
      assert_gone(info.run_id, [Host.ident(info.wrapper_pid)])
    end

    test "a kill that hangs is SIGKILLed after grace + :kill_timeout; the Port is closed",
         ctx do
      {:ok, pid, info} =
        start(ctx, :cgroup,
          snakepit: ctx.fake,
          env: %{"FAKE_KILL" => "hang", "FAKE_KILL_PIDS" => ctx.pids},
          cmd: ["sh", "-c", "#{@leaver} exec sleep 600"],
          grace: 0,
          kill_timeout: 300
        )

      task = Task.async(fn -> ExUnit.CaptureLog.capture_log(fn -> Worker.kill(pid) end) end)

      log =
        case Task.yield(task, 15_000) || Task.shutdown(task, :brutal_kill) do
          {:ok, log} -> log
          nil -> flunk("kill/1 did not return within 15 s (`snakepit kill` hangs)")
          {:exit, reason} -> flunk("kill/1 exited: #{inspect(reason)}")
        end

      assert log =~ "snakepit kill did not return within 300 ms"
      [kill_pid] = ctx.pids |> File.read!() |> String.split()
      assert Host.eventually(fn -> not Host.alive?(Host.ident(String.to_integer(kill_pid))) end)
      assert_gone(info.run_id, [Host.ident(info.wrapper_pid)])
    end
  end

  # ------------------------------------------------------------------

  defp start(ctx, mode, opts) do
    {link, opts} = Keyword.pop(opts, :link, true)

    opts =
      opts
      |> Keyword.put_new(:owner, ctx.owner)
      |> Keyword.put_new(:output, :discard)
      |> Keyword.put(:no_cgroup, mode == :posix)

    res = if link, do: Worker.start_link(opts), else: Worker.start(opts)

    case res do
      {:ok, _pid, info} ->
        followed = Enum.map([info.os_pid, info.wrapper_pid], &Host.ident/1)
        Agent.update(ctx.ids, &[{info.run_id, followed} | &1])

      {:error, %Error{run_id: rid}} when is_binary(rid) ->
        Agent.update(ctx.ids, &[{rid, []} | &1])

      _ ->
        :ok
    end

    res
  end

  # The run's processes (by run ID and by PID), cgroup and record are all
  # gone; polled with a deadline.
  defp assert_gone(run_id, idents \\ []) do
    case Host.wait_all_gone(idents, [run_id], [], 10_000) do
      {:ok, _} -> assert Host.listed_runs([run_id]) == []
      {:error, left} -> flunk("run #{run_id} not gone: #{inspect(left, pretty: true)}")
    end
  end

  # A cgroup a test made: what is still in it killed, then removed.
  defp remove_cgroup(dir) do
    if File.dir?(dir) do
      File.write(Path.join(dir, "cgroup.kill"), "1")

      Host.eventually(fn ->
        dir |> Path.join("cgroup.events") |> File.read!() |> String.contains?("populated 0")
      end)

      # Deepest first.
      for sub <- Path.wildcard(Path.join(dir, "**")) |> Enum.sort_by(&(-byte_size(&1))),
          File.dir?(sub),
          do: File.rmdir(sub)

      File.rmdir(dir)
    end
  end

  defp cleanup(ids) do
    runs = Agent.get(ids, & &1)
    Agent.stop(ids)
    Host.cleanup(Enum.flat_map(runs, &elem(&1, 1)), Enum.map(runs, &elem(&1, 0)))
  end
end
