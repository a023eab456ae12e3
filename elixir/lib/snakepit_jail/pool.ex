defmodule SnakepitJail.Pool do
  @moduledoc """
  Example: a Supervisor of N jailed workers, by default the Python gRPC
  workers of python/examples/grpc_worker.py, called from Elixir with
  `SnakepitJail.GRPC`.

      {:ok, pool} = SnakepitJail.Pool.start_link(size: 4)
      {:ok, reply} = SnakepitJail.Pool.ping(pool, 1, "hello")
      reply.run_id   #=> the run ID of worker 1
      Supervisor.stop(pool)   # every worker's run torn down, gracefully

  Each worker is a `SnakepitJail.Worker` child (`{SnakepitJail.Worker, i}`
  ids, one_for_one), each in its own run. When a worker's GenServer
  crashes, the supervisor restarts it in a fresh run while the old run is
  torn down.

  Options:
  * `:size`: number of workers (default 4);
  * `:worker`: options for every `SnakepitJail.Worker` (default:
    `grpc_worker_opts/1` of these options); `:cmd` may also be a function
    of the worker's index returning the options;
  * `:python` (default /usr/bin/python3), `:script` (default
    `$SNAKEPIT_GRPC_WORKER`, else python/examples/grpc_worker.py of this
    repository), `:grace` (default 2 s): for the gRPC workers;
  * `:max_restarts`, `:max_seconds`: the supervisor's restart intensity
    (default 3 in 5 s, as Supervisor's);
  * `:owner`: receives every worker's events (default: none);
  * `:name`: the supervisor's name.
  """
  use Supervisor

  alias SnakepitJail.{GRPC, Worker}

  @repo_script Path.expand("../../../python/examples/grpc_worker.py", __DIR__)

  def start_link(opts \\ []) do
    sup_opts = if opts[:name], do: [name: opts[:name]], else: []
    Supervisor.start_link(__MODULE__, opts, sup_opts)
  end

  @impl true
  def init(opts) do
    size = Keyword.get(opts, :size, 4)

    children =
      for i <- 1..size do
        wopts =
          case Keyword.get(opts, :worker) do
            nil -> grpc_worker_opts(opts)
            fun when is_function(fun, 1) -> fun.(i)
            kw -> kw
          end

        wopts = wopts |> Keyword.put_new(:owner, opts[:owner]) |> Keyword.put(:id, {Worker, i})
        Worker.child_spec(wopts)
      end

    Supervisor.init(children,
      strategy: :one_for_one,
      max_restarts: Keyword.get(opts, :max_restarts, 3),
      max_seconds: Keyword.get(opts, :max_seconds, 5)
    )
  end

  @doc "Worker options that run python/examples/grpc_worker.py on a free port."
  def grpc_worker_opts(opts \\ []) do
    python = Keyword.get(opts, :python, "/usr/bin/python3")
    script = Keyword.get(opts, :script) || System.get_env("SNAKEPIT_GRPC_WORKER") || @repo_script

    [
      cmd: [python, script, "--port", "0", "--shutdown-timeout", "2"],
      ready_line: "^GRPC_READY:[0-9]+$",
      ready_timeout: Keyword.get(opts, :ready_timeout, 60_000),
      grace: Keyword.get(opts, :grace, 2_000),
      output: Keyword.get(opts, :output, :log)
    ] ++ Keyword.take(opts, [:no_cgroup, :mode, :snakepit, :limits, :best_effort_limits, :env])
  end

  @doc "`[{index, pid}]` of the running workers, by index."
  def workers(pool) do
    for {{Worker, i}, pid, _, _} <- Supervisor.which_children(pool), is_pid(pid) do
      {i, pid}
    end
    |> Enum.sort()
  end

  @doc "The worker with this index (nil while it restarts)."
  def worker_pid(pool, index),
    do: pool |> workers() |> List.keyfind(index, 0, {nil, nil}) |> elem(1)

  @doc "The gRPC port a worker reported (`GRPC_READY:N`)."
  def grpc_port(%{ready_line: "GRPC_READY:" <> n}), do: String.to_integer(n)
  def grpc_port(_), do: nil

  @doc "Calls Ping on worker `index`."
  def ping(pool, index, payload, timeout \\ 5_000) do
    case worker_pid(pool, index) do
      nil -> {:error, :no_worker}
      pid -> GRPC.ping("127.0.0.1", grpc_port(Worker.info(pid)), payload, timeout)
    end
  end

  @doc "Calls Compute(op, n) on worker `index`."
  def compute(pool, index, op, n, timeout \\ 30_000) do
    case worker_pid(pool, index) do
      nil -> {:error, :no_worker}
      pid -> GRPC.compute("127.0.0.1", grpc_port(Worker.info(pid)), op, n, timeout)
    end
  end
end
