defmodule SnakepitJail.StormTest do
  # A restart storm: the pool's workers are restarted 200 times (half of
  # them because the command exited, half because their GenServer was
  # killed), each leaving a setsid grandchild behind. Nothing may pile up:
  # at no sample more runs than twice the pool, and none at all after.
  use ExUnit.Case, async: false

  alias SnakepitJail.Pool
  alias SnakepitJail.Test.{Figures, Host}

  @moduletag timeout: 300_000
  @size 4
  @restarts 200

  for mode <- [:cgroup, :posix] do
    @mode mode

    test "#{mode} mode: #{@restarts} restarts, nothing accumulates" do
      Process.flag(:trap_exit, true)
      test_pid = self()
      {:ok, seen} = Agent.start(fn -> [] end)

      on_exit(fn ->
        ids = Agent.get(seen, & &1)
        Agent.stop(seen)
        Host.cleanup([], ids)
      end)

      worker = fn _i ->
        [
          cmd: [
            "sh",
            "-c",
            "setsid sleep 600 </dev/null >/dev/null 2>&1 & echo UP; sleep 0.05; exit 3"
          ],
          ready_line: "^UP$",
          ready_timeout: 10_000,
          grace: 1_000,
          output: :discard,
          owner: test_pid,
          no_cgroup: @mode == :posix
        ]
      end

      # The sampler must see a run that is certainly alive: checked once,
      # on a worker that does not exit by itself (the storm's own runs live
      # only ~50 ms, which a loaded host may not sample in time).
      {:ok, probe, info} =
        SnakepitJail.Worker.start(
          cmd: ["sh", "-c", "echo UP; exec sleep 600"],
          ready_line: "^UP$",
          ready_timeout: 10_000,
          output: :discard,
          owner: test_pid,
          no_cgroup: @mode == :posix
        )

      Agent.update(seen, &[info.run_id | &1])
      assert live_runs([info.run_id]) == 1, "the sampler does not see a live run"
      :ok = SnakepitJail.Worker.stop(probe)
      Agent.update(seen, fn ids -> List.delete(ids, info.run_id) end)
      Host.cleanup([], [info.run_id])

      t0 = System.monotonic_time(:millisecond)

      {:ok, pool} =
        Pool.start_link(size: @size, worker: worker, max_restarts: 100_000, max_seconds: 1)

      {starts, max_live} = storm(seen, 0, 0)
      took = System.monotonic_time(:millisecond) - t0
      assert starts - @size >= @restarts
      ids = Agent.get(seen, & &1)
      assert length(Enum.uniq(ids)) == starts, "every start got a fresh run"

      :ok = Supervisor.stop(pool)

      case Host.wait_all_gone([], ids, [], 20_000) do
        {:ok, _} -> :ok
        {:error, left} -> flunk("after the storm: #{inspect(left, pretty: true)}")
      end

      assert Host.listed_runs(ids) == []
      assert max_live <= 2 * @size, "#{max_live} runs alive at once with a pool of #{@size}"

      Figures.add(
        Atom.to_string(@mode),
        "restart storm: #{starts - @size} restarts took",
        took / 1000,
        "s"
      )

      Figures.add(
        Atom.to_string(@mode),
        "restart storm: most runs alive at a sample",
        max_live,
        "runs"
      )
    end
  end

  # Counts starts; kills every other fresh worker's GenServer; samples the
  # live runs (cgroups, records, marked processes) once every 10 starts.
  defp storm(_seen, starts, max_live) when starts - @size >= @restarts, do: {starts, max_live}

  defp storm(seen, starts, max_live) do
    receive do
      {:snakepit_jail, pid, {:ready, info}} ->
        Agent.update(seen, &[info.run_id | &1])
        starts = starts + 1
        if rem(starts, 2) == 0, do: Process.exit(pid, :kill)

        max_live =
          if rem(starts, 10) == 5,
            do: max(max_live, live_runs(Agent.get(seen, & &1))),
            else: max_live

        storm(seen, starts, max_live)
    after
      30_000 -> flunk("no worker started for 30 s after #{starts} starts")
    end
  end

  # How many of the runs ids are alive: a cgroup, a record or a process.
  defp live_runs(ids) do
    (Host.run_cgroups(ids) ++
       Host.run_records(ids) ++
       Enum.map(Host.procs_by_run_ids(ids), &elem(&1, 1)))
    |> Enum.map(&run_of(&1, ids))
    |> Enum.uniq()
    |> length()
  end

  defp run_of(path_or_id, ids), do: Enum.find(ids, path_or_id, &String.contains?(path_or_id, &1))
end
