defmodule SnakepitJail.Test.Host do
  @moduledoc false
  # What is left on the host: processes by run ID and by PID, run cgroups,
  # POSIX run records. Every check reads /proc and the cgroupfs directly.

  @doc "The snakepit binary the tests use."
  def bin, do: SnakepitJail.snakepit_bin()

  @doc """
  The cgroup2 mount: a `cgroup2` entry of /proc/self/mounts whose statfs
  type is cgroup2fs (`stat -f`); nil if there is none.
  """
  def cgroup2_mount do
    "/proc/self/mounts"
    |> File.read!()
    |> String.split("\n", trim: true)
    |> Enum.map(&String.split/1)
    |> Enum.filter(fn f -> Enum.at(f, 2) == "cgroup2" end)
    |> Enum.map(&Enum.at(&1, 1))
    |> Enum.find(fn path ->
      case System.cmd("stat", ["-f", "-c", "%T", path], stderr_to_stdout: true) do
        {"cgroup2fs\n", 0} -> true
        _ -> false
      end
    end)
  end

  @doc "Controllers enabled at the cgroup2 root."
  def root_controllers do
    case cgroup2_mount() do
      nil -> []
      m -> m |> Path.join("cgroup.controllers") |> File.read!() |> String.split()
    end
  end

  @doc "Where POSIX run records live (as snakepit decides it for root)."
  def records_dir, do: System.get_env("SNAKEPIT_RECORDS_DIR") || "/run/snakepit/runs"

  @doc "All numeric PIDs in /proc."
  def all_pids do
    for name <- File.ls!("/proc"), pid = parse_int(name), pid != nil, do: pid
  end

  defp parse_int(s) do
    case Integer.parse(s) do
      {n, ""} -> n
      _ -> nil
    end
  end

  @doc "`{start_time, state, session}` of a PID from /proc/PID/stat, or nil."
  def stat(pid) do
    case File.read("/proc/#{pid}/stat") do
      {:ok, text} ->
        # comm may hold spaces and parentheses: the fields follow the last ')'.
        {at, 1} = text |> :binary.matches(")") |> List.last()
        f = text |> binary_part(at + 1, byte_size(text) - at - 1) |> String.split()
        # f starts at field 3 (state); session is field 6, starttime field 22.
        {String.to_integer(Enum.at(f, 19)), Enum.at(f, 0), String.to_integer(Enum.at(f, 3))}

      {:error, _} ->
        nil
    end
  end

  @doc "A PID with its start time, to follow that very process."
  def ident(pid) do
    case stat(pid) do
      {start, _, _} -> {pid, start}
      nil -> {pid, nil}
    end
  end

  @doc "Whether that process still exists (a zombie has exited: not alive)."
  def alive?({pid, start}) do
    case stat(pid) do
      {^start, state, _} -> state not in ["Z", "X"]
      _ -> false
    end
  end

  def session(pid), do: with({_, _, sid} <- stat(pid), do: sid)

  @doc """
  Processes on the host marked with any of the run IDs (SNAKEPIT_RUN_ID in
  the environment, or the ID in argv) and not exited:
  `[{pid, run_id, cmdline}]`. Our own BEAM is not marked.
  """
  def procs_by_run_ids([]), do: []

  def procs_by_run_ids(run_ids) do
    me = String.to_integer(System.pid())
    ids = MapSet.new(run_ids)
    pattern = :binary.compile_pattern(run_ids)

    for pid <- all_pids(),
        pid != me,
        rid = marker(pid, ids, pattern),
        rid != nil,
        alive?(ident(pid)) do
      {pid, rid, cmdline(pid)}
    end
  end

  defp marker(pid, ids, pattern) do
    env_id =
      case File.read("/proc/#{pid}/environ") do
        {:ok, env} ->
          env
          |> String.split("\0")
          |> Enum.find_value(fn
            "SNAKEPIT_RUN_ID=" <> rid -> if MapSet.member?(ids, rid), do: rid
            _ -> nil
          end)

        _ ->
          nil
      end

    env_id ||
      case File.read("/proc/#{pid}/cmdline") do
        {:ok, c} ->
          case :binary.match(c, pattern) do
            {at, len} -> binary_part(c, at, len)
            :nomatch -> nil
          end

        _ ->
          nil
      end
  end

  @doc "PIDs of the live processes marked with this run ID."
  def marked_pids(run_id), do: for({pid, _, _} <- procs_by_run_ids([run_id]), do: pid)

  def cmdline(pid) do
    case File.read("/proc/#{pid}/cmdline") do
      {:ok, c} -> c |> String.trim_trailing("\0") |> String.replace("\0", " ")
      _ -> ""
    end
  end

  @doc "The absolute cgroup directory of a run (from a relative cgroup path), or nil."
  def cgroup_dir(nil), do: nil
  def cgroup_dir(rel), do: Path.join(cgroup2_mount(), rel)

  @doc "The cgroup of a PID, relative to the cgroup2 mount."
  def pid_cgroup(pid) do
    case File.read("/proc/#{pid}/cgroup") do
      {:ok, text} ->
        Enum.find_value(String.split(text, "\n"), fn
          "0::" <> p -> p
          _ -> nil
        end)

      _ ->
        nil
    end
  end

  @doc "Run cgroups of these run IDs that still exist (any depth below the snakepit parent)."
  def run_cgroups(run_ids) do
    case cgroup2_mount() do
      nil ->
        []

      m ->
        # One walk of the tree for all the IDs: a walk per ID made a storm's
        # samples slow on a host with many cgroups.
        wanted = MapSet.new(run_ids, &"snakepit-#{&1}")

        for path <- Path.wildcard(Path.join([m, "**", "snakepit-*"])),
            MapSet.member?(wanted, Path.basename(path)),
            File.dir?(path),
            do: path
    end
  end

  @doc "POSIX run records of these run IDs that still exist."
  def run_records(run_ids) do
    for rid <- run_ids, p = Path.join(records_dir(), "#{rid}.json"), File.exists?(p), do: p
  end

  @doc "Run IDs snakepit itself lists (`snakepit ps --json`) among these."
  def listed_runs(run_ids) do
    {out, _} = System.cmd(bin(), ["ps", "--json"], stderr_to_stdout: false)

    for rid <- run_ids, String.contains?(out, ~s("id": "#{rid}")), do: rid
  end

  @doc """
  Everything of these runs still on the host: live processes followed by PID,
  live processes marked with a run ID, run cgroups, POSIX records. `[]`
  means all gone.
  """
  def leftovers(idents, run_ids) do
    for(id <- idents, alive?(id), do: {:pid, id, cmdline(elem(id, 0))}) ++
      for(p <- procs_by_run_ids(run_ids), do: {:marked, p}) ++
      for(c <- run_cgroups(run_ids), do: {:cgroup, c}) ++
      for r <- run_records(run_ids), do: {:record, r}
  end

  @doc """
  Polls (every millisecond) until every followed process has exited and
  every path (run cgroup, POSIX record) is gone: that moment is the result,
  `{:ok, system_time_us}`. Then confirms with full scans (`leftovers/2`,
  which also finds any process marked with a run ID) until they find
  nothing; `{:error, leftovers}` if something is still there at the
  deadline.
  """
  def wait_all_gone(idents, run_ids, paths, timeout_ms) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    paths = Enum.reject(paths, &is_nil/1)

    case poll_quick(idents, paths, deadline) do
      {:ok, t} ->
        case eventually(
               fn -> leftovers(idents, run_ids) == [] end,
               max(deadline - System.monotonic_time(:millisecond), 0)
             ) do
          true -> {:ok, t}
          nil -> {:error, leftovers(idents, run_ids)}
        end

      :timeout ->
        {:error, leftovers(idents, run_ids)}
    end
  end

  defp poll_quick(idents, paths, deadline) do
    now = :os.system_time(:microsecond)

    cond do
      not Enum.any?(idents, &alive?/1) and not Enum.any?(paths, &File.exists?/1) ->
        {:ok, now}

      System.monotonic_time(:millisecond) > deadline ->
        :timeout

      true ->
        Process.sleep(1)
        poll_quick(idents, paths, deadline)
    end
  end

  @doc "Polls `fun` until it returns a truthy value or the timeout passes; returns the value or nil."
  def eventually(fun, timeout_ms \\ 10_000) do
    deadline = System.monotonic_time(:millisecond) + timeout_ms
    do_eventually(fun, deadline)
  end

  defp do_eventually(fun, deadline) do
    case fun.() do
      v when v not in [nil, false] ->
        v

      _ ->
        if System.monotonic_time(:millisecond) > deadline do
          nil
        else
          Process.sleep(2)
          do_eventually(fun, deadline)
        end
    end
  end

  @doc """
  Cleans up after a test, whatever happened: tears the runs down through
  snakepit (by run ID), then SIGKILLs any followed process that is still
  the same process (PID and start time).
  """
  def cleanup(idents, run_ids) do
    for rid <- Enum.uniq(run_ids), SnakepitJail.valid_run_id?(rid) do
      System.cmd(bin(), ["kill", "--grace", "0s", rid], stderr_to_stdout: true)
    end

    for {pid, _} = id <- idents, alive?(id) do
      System.cmd("kill", ["-KILL", Integer.to_string(pid)], stderr_to_stdout: true)
    end

    :ok
  end
end
