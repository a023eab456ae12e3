defmodule SnakepitJail.SeedScenarioTest do
  # The scenario that started snakepit: a BEAM node (its own OS process)
  # runs a pool of 4 Python gRPC workers, each of which double-forks a
  # setsid grandchild; then the node, or part of it, goes away. After each
  # way: no process of those workers is left (followed by PID, and found by
  # run ID), no run cgroup, no POSIX record; the time from the kill to "all
  # gone" is recorded (SnakepitJail.Test.Figures).
  use ExUnit.Case, async: false

  alias SnakepitJail.Test.{Figures, Host, Node}

  @moduletag timeout: 300_000
  @size 4
  @gone_ms 20_000

  for mode <- ["cgroup", "posix"] do
    @mode mode

    describe "#{mode} mode:" do
      test "kill -9 of the whole BEAM" do
        node = start_node(@mode)
        workers = Map.values(node.workers)
        watch = watch_gone(workers)
        t_kill = :os.system_time(:microsecond)
        Node.kill9(node)
        assert Node.await_exit(node) == 137
        record_gone(node.mode, watch, t_kill, "kill -9 of the BEAM")
      end

      test "Process.exit(worker, :kill) of one worker's GenServer" do
        node = start_node(@mode)
        old = node.workers[2]
        watch = watch_gone([old])
        {node, lines} = Node.command(node, "crash 2", "RESTARTED")
        t_kill = lines |> Enum.find(&String.starts_with?(&1, "T ")) |> time_of()
        record_gone(node.mode, watch, t_kill, "Process.exit(worker, :kill)")

        # The supervisor restarted it in a new run; the other three are untouched.
        new = node.workers[2]
        assert new.run_id != old.run_id
        assert new.ping == "ok"
        assert_running(new)
        for i <- [1, 3, 4], do: assert_running(node.workers[i])

        workers = Map.values(node.workers)
        on_exit(fn -> Host.cleanup(idents(workers), run_ids(workers)) end)
        {_node, _} = Node.command(node, "stop", "STOPPED")
        assert_all_gone(workers)
      end

      test "Supervisor.stop of the pool" do
        node = start_node(@mode)
        workers = Map.values(node.workers)
        watch = watch_gone(workers)
        {node, lines} = Node.command(node, "stop", "STOPPED")
        t_kill = lines |> Enum.find(&String.starts_with?(&1, "T ")) |> time_of()
        # Supervisor.stop returns once every worker's terminate/2 has run,
        # and terminate returns once snakepit has torn the run down.
        t_stopped = lines |> List.last() |> time_of()
        assert Host.leftovers(idents(workers), run_ids(workers)) == []
        record_gone(node.mode, watch, t_kill, "Supervisor.stop(pool)")
        Figures.add(@mode, "Supervisor.stop(pool) returned", (t_stopped - t_kill) / 1000)
      end

      test ":init.stop()" do
        node = start_node(@mode)
        watch = watch_gone(Map.values(node.workers))
        {node, lines} = Node.command(node, "init_stop", "T ")
        t_kill = lines |> List.last() |> time_of()
        assert Node.await_exit(node) == 0
        record_gone(node.mode, watch, t_kill, ":init.stop()")
      end
    end
  end

  defp start_node(mode) do
    node = Node.start(mode, @size)
    workers = Map.values(node.workers)

    on_exit(fn ->
      Node.kill9(node)
      Host.cleanup(idents(workers), run_ids(workers))
    end)

    assert length(workers) == @size

    for w <- workers do
      assert w.ping == "ok", "gRPC Ping of worker #{w.index} from the node: #{w.ping}"
      assert_running(w)
    end

    # Fresh runs, one each.
    assert length(Enum.uniq(run_ids(workers))) == @size
    node
  end

  # A worker is there: its wrapper, process and grandchild alive; the
  # grandchild in a session of its own, marked with the run ID, and (cgroup
  # mode) in the run's cgroup; the run found by snakepit ps.
  defp assert_running(w) do
    assert Host.alive?(w.wrapper), "wrapper of #{w.run_id}"
    assert Host.alive?(w.worker), "worker of #{w.run_id}"
    assert w.grandchild != nil, "no GRANDCHILD line from worker #{w.index}"
    assert Host.alive?(w.grandchild), "grandchild of #{w.run_id}"
    {gpid, _} = w.grandchild
    {wpid, _} = w.worker
    # setsid() in the intermediate child: a session of its own.
    assert Host.session(gpid) not in [Host.session(wpid), Host.session(elem(w.wrapper, 0))]
    marked = Host.procs_by_run_ids([w.run_id]) |> Enum.map(&elem(&1, 0))
    assert wpid in marked and gpid in marked

    if w.cgroup do
      assert Host.pid_cgroup(gpid) == w.cgroup
      assert File.dir?(Host.cgroup_dir(w.cgroup))
    end

    assert Host.listed_runs([w.run_id]) == [w.run_id]
  end

  defp idents(workers) do
    Enum.flat_map(workers, fn w -> Enum.reject([w.wrapper, w.worker, w.grandchild], &is_nil/1) end)
  end

  defp run_ids(workers), do: Enum.map(workers, & &1.run_id)

  # Polls from before the kill, so that the time to "all gone" is not
  # delayed by whatever the test does after it. Followed: the wrapper,
  # worker and grandchild of each, and every process marked with their run
  # IDs just before the kill (the guardians); then the run cgroups, or in
  # POSIX mode the run records. A full scan by run ID confirms afterwards.
  defp watch_gone(workers) do
    ids = run_ids(workers)
    marked = for {pid, _, _} <- Host.procs_by_run_ids(ids), do: Host.ident(pid)
    followed = Enum.uniq(idents(workers) ++ marked)

    paths =
      for w <- workers do
        if w.cgroup,
          do: Host.cgroup_dir(w.cgroup),
          else: Path.join(Host.records_dir(), "#{w.run_id}.json")
      end

    # Each path is there to be watched (cgroup mode: the run cgroup; POSIX
    # mode: the run record).
    assert Enum.all?(paths, &File.exists?/1), "not there before the kill: #{inspect(paths)}"
    {ids, Task.async(fn -> Host.wait_all_gone(followed, ids, paths, 120_000) end)}
  end

  defp record_gone(mode, {ids, watch}, t_kill, what) do
    case Task.await(watch, :infinity) do
      {:ok, t_gone} ->
        ms = (t_gone - t_kill) / 1000
        assert ms > 0, "all gone before the kill?"
        assert ms < @gone_ms, "#{mode} mode, #{what}: all gone only after #{ms} ms"
        Figures.add(mode, what, ms)
        # snakepit's own view agrees.
        assert Host.listed_runs(ids) == []

      {:error, left} ->
        flunk("#{mode} mode, #{what}: still there: #{inspect(left, pretty: true)}")
    end
  end

  defp assert_all_gone(workers) do
    dirs = for w <- workers, w.cgroup, do: Host.cgroup_dir(w.cgroup)
    assert {:ok, _} = Host.wait_all_gone(idents(workers), run_ids(workers), dirs, @gone_ms)
  end

  defp time_of(line), do: line |> String.split() |> List.last() |> String.to_integer()
end
