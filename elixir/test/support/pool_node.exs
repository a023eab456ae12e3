# A BEAM node for the seed scenario, started as its own OS process by
# test/seed_scenario_test.exs:
#
#   elixir -pa EBIN pool_node.exs MODE SIZE FIXTURE
#
# MODE: cgroup or posix (--no-cgroup). It starts an application whose
# supervision tree holds a SnakepitJail.Pool of SIZE Python gRPC workers
# (FIXTURE: forking_grpc_worker.py, each double-forks a setsid grandchild),
# pings each over gRPC, prints a WORKER line per worker and NODE_READY,
# then obeys commands on stdin, one per line:
#
#   crash I     Process.exit(worker I's GenServer, :kill); prints T <us> just
#               before, then the restarted worker's WORKER line and RESTARTED
#   stop        Supervisor.stop(pool); T <us> before, STOPPED <us> after
#   init_stop   :init.stop(); T <us> before
#
# Times are :os.system_time(:microsecond), comparable with the test's. EOF
# on stdin halts the node.

[mode, size, fixture] = System.argv()
size = String.to_integer(size)

Logger.configure(level: :warning)

defmodule PoolNode do
  def say(line), do: IO.puts(line)

  def worker_line(i, pid, owner_inbox) do
    info = SnakepitJail.Worker.info(pid)
    grandchild = grandchild(pid, owner_inbox)

    payload = "ping #{i}"

    ping =
      case SnakepitJail.GRPC.ping("127.0.0.1", SnakepitJail.Pool.grpc_port(info), payload) do
        {:ok, %{pid: p, run_id: r, payload: ^payload}}
        when p == info.os_pid and r == info.run_id ->
          "ok"

        other ->
          "bad:" <> String.replace(inspect(other), " ", "_")
      end

    Enum.join(
      [
        "WORKER",
        i,
        info.run_id,
        info.wrapper_pid,
        info.os_pid,
        grandchild,
        ping,
        info.cgroup || "-",
        inspect(pid)
      ],
      " "
    )
  end

  # The fixture prints GRANDCHILD:<pid> before it is ready; the worker
  # delivered it to us (output: :owner) before start_link returned.
  defp grandchild(pid, _inbox) do
    receive do
      {:snakepit_jail, ^pid, {:output, "GRANDCHILD:" <> n}} -> n
    after
      10_000 -> "none"
    end
  end
end

defmodule PoolNode.App do
  use Application

  def start(_type, _args) do
    opts = Application.get_env(:pool_node, :pool)
    # :temporary: Supervisor.stop(pool) in the test must not bring it back.
    children = [
      %{
        id: :pool,
        start: {SnakepitJail.Pool, :start_link, [opts]},
        type: :supervisor,
        shutdown: :infinity,
        restart: :temporary
      }
    ]

    Supervisor.start_link(children, strategy: :one_for_one, name: PoolNode.Top)
  end
end

worker_opts =
  SnakepitJail.Pool.grpc_worker_opts(python: "/usr/bin/python3", script: fixture, grace: 2_000)
  |> Keyword.put(:output, :owner)
  |> Keyword.put(:owner, self())
  |> Keyword.put(:no_cgroup, mode == "posix")

Application.put_env(:pool_node, :pool,
  size: size,
  worker: worker_opts,
  name: PoolNode.Pool,
  max_restarts: 10,
  max_seconds: 5
)

:ok =
  :application.load(
    {:application, :pool_node,
     [
       description: ~c"seed scenario node",
       vsn: ~c"0.1.0",
       modules: [PoolNode.App],
       registered: [],
       applications: [:kernel, :stdlib, :elixir, :logger, :snakepit_jail],
       mod: {PoolNode.App, []}
     ]}
  )

{:ok, _} = Application.ensure_all_started(:pool_node)
pool = Process.whereis(PoolNode.Pool)

for {i, pid} <- SnakepitJail.Pool.workers(pool),
    do: PoolNode.say(PoolNode.worker_line(i, pid, self()))

PoolNode.say("NODE_READY #{System.pid()}")

loop = fn loop ->
  case IO.gets("") do
    :eof ->
      System.halt(1)

    {:error, _} ->
      System.halt(1)

    line ->
      case String.split(line) do
        ["crash", i] ->
          i = String.to_integer(i)
          old = SnakepitJail.Pool.worker_pid(pool, i)
          PoolNode.say("T #{:os.system_time(:microsecond)}")
          Process.exit(old, :kill)

          new =
            Enum.find_value(Stream.repeatedly(fn -> Process.sleep(5) end), fn _ ->
              case SnakepitJail.Pool.worker_pid(pool, i) do
                p when is_pid(p) and p != old -> p
                _ -> nil
              end
            end)

          PoolNode.say(PoolNode.worker_line(i, new, self()))
          PoolNode.say("RESTARTED")

        ["stop"] ->
          PoolNode.say("T #{:os.system_time(:microsecond)}")
          :ok = Supervisor.stop(pool)
          PoolNode.say("STOPPED #{:os.system_time(:microsecond)}")

        ["init_stop"] ->
          PoolNode.say("T #{:os.system_time(:microsecond)}")
          :init.stop()
          Process.sleep(:infinity)

        _ ->
          PoolNode.say("UNKNOWN #{String.trim(line)}")
      end

      loop.(loop)
  end
end

loop.(loop)
