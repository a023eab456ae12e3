defmodule SnakepitJail.Test.Node do
  @moduledoc false
  # Drives test/support/pool_node.exs: a separate BEAM OS process running a
  # pool of jailed Python gRPC workers.

  alias SnakepitJail.Test.Host

  defstruct [:port, :beam, :workers, :mode]

  @script Path.expand("pool_node.exs", __DIR__)
  @fixture Path.expand("../fixtures/forking_grpc_worker.py", __DIR__)

  @doc "Starts a node with `size` workers in `mode` (\"cgroup\" or \"posix\"); returns once NODE_READY."
  def start(mode, size \\ 4) do
    elixir = System.find_executable("elixir") || raise "no elixir on PATH"
    ebin = Application.app_dir(:snakepit_jail, "ebin")

    port =
      Port.open({:spawn_executable, elixir}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        {:line, 65_536},
        args: ["-pa", ebin, @script, mode, Integer.to_string(size), @fixture],
        env: [{~c"SNAKEPIT_BIN", String.to_charlist(Host.bin())}]
      ])

    node = %__MODULE__{port: port, mode: mode, workers: %{}}
    {:os_pid, os_pid} = Port.info(port, :os_pid)
    node = %{node | beam: Host.ident(os_pid)}
    {node, lines} = read_until(node, "NODE_READY", 120_000)
    ["NODE_READY", pid] = String.split(List.last(lines))
    # elixir is a script that execs erl, which execs beam: one PID.
    ^os_pid = String.to_integer(pid)
    node
  end

  @doc "Sends a command line; returns the lines up to and including the one starting with `until`."
  def command(node, cmd, until, timeout \\ 60_000) do
    Port.command(node.port, cmd <> "\n")
    read_until(node, until, timeout)
  end

  @doc "Reads lines until one starts with `prefix`; WORKER lines update the node's workers."
  def read_until(node, prefix, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout
    read_until(node, prefix, deadline, [], "")
  end

  defp read_until(%{port: port} = node, prefix, deadline, acc, partial) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, {:noeol, chunk}}} ->
        read_until(node, prefix, deadline, acc, partial <> chunk)

      {^port, {:data, {:eol, chunk}}} ->
        line = partial <> chunk
        node = maybe_worker(node, line)
        acc = acc ++ [line]

        if String.starts_with?(line, prefix),
          do: {node, acc},
          else: read_until(node, prefix, deadline, acc, "")

      {^port, {:exit_status, status}} ->
        raise "node exited with status #{status} waiting for #{prefix}; output:\n" <>
                Enum.join(acc, "\n")
    after
      remaining ->
        raise "node: no #{prefix} line in time; output:\n" <> Enum.join(acc, "\n")
    end
  end

  defp maybe_worker(node, "WORKER " <> rest) do
    [i, run_id, wrapper, os_pid, grandchild, ping, cgroup, gen] = String.split(rest)

    w = %{
      index: String.to_integer(i),
      run_id: run_id,
      wrapper: Host.ident(String.to_integer(wrapper)),
      worker: Host.ident(String.to_integer(os_pid)),
      grandchild:
        if(grandchild == "none", do: nil, else: Host.ident(String.to_integer(grandchild))),
      ping: ping,
      cgroup: if(cgroup == "-", do: nil, else: cgroup),
      gen: gen
    }

    %{node | workers: Map.put(node.workers, w.index, w)}
  end

  defp maybe_worker(node, _), do: node

  @doc "Waits for the node's exit status (after it was killed or stopped)."
  def await_exit(%{port: port}, timeout \\ 30_000) do
    receive do
      {^port, {:exit_status, status}} -> status
    after
      timeout -> :timeout
    end
  end

  @doc "SIGKILLs the node's BEAM if it is still that process."
  def kill9(%{beam: {pid, _} = id}) do
    if Host.alive?(id),
      do: System.cmd("kill", ["-KILL", Integer.to_string(pid)], stderr_to_stdout: true)

    :ok
  end
end
