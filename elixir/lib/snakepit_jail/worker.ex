defmodule SnakepitJail.Worker do
  @moduledoc """
  A GenServer that owns one OS process started under
  `snakepit run --exit-with-stdin` through a Port.

      {:ok, pid, info} =
        SnakepitJail.Worker.start_link(
          cmd: ["/usr/bin/python3", "worker.py", "--port", "0"],
          ready_line: "^GRPC_READY:",
          ready_timeout: 30_000,
          grace: 2_000
        )

      info.run_id   #=> "k3x9a0b"
      info.os_pid   #=> 48211 (the command's PID, not the wrapper's)

  `start_link/1` returns only once the command is ready (see `:ready` and
  `:ready_line`; without either, as soon as it runs), as
  `{:ok, pid, info}`, which supervisors accept. A failure returns
  `{:error, %SnakepitJail.Error{}}` carrying snakepit's own message.

  ## How the run is torn down

  * `terminate/2` with `:normal`, `:shutdown` or `{:shutdown, _}` (a
    supervisor stopping the child, `stop/1`): graceful, `snakepit kill
    --grace GRACE RUNID`: SIGTERM to every process of the run, the grace
    period, then SIGKILL to what is left; returns when all are gone.
  * `terminate/2` with any other reason (a crash), and `kill/1`:
    immediate, `snakepit kill --grace 0s RUNID`.
  * The GenServer killed without `terminate/2` (`Process.exit(pid, :kill)`,
    a supervisor's `:brutal_kill`), or the whole BEAM killed (`kill -9`,
    OOM killer, `System.halt/1`): the Port closes, the wrapper sees EOF on
    its stdin (`--exit-with-stdin`) and tears the run down with its grace.
    Should the wrapper itself be SIGKILLed, its guardian does it.
  * The command exits on its own: the wrapper tears down what it left
    behind, then exits with its status; the GenServer stops with `:normal`
    (status 0) or `{:exit_status, status}`.

  ## Messages to the owner

  The owner (option `:owner`, default the process calling `start_link/1`;
  `nil` for none) gets `{:snakepit_jail, worker_pid, event}` with event:

  * `{:ready, info}`: the command is ready;
  * `{:output, line}`: a line of the command's stdout or stderr (with
    `output: :owner`);
  * `{:oom, line}`: the kernel OOM-killed processes of the run (the
    wrapper's `snakepit: run ID: out of memory: ...` line);
  * `{:pids_max, line}`: forks were refused at `pids.max`;
  * `{:snakepit, line}`: any other line snakepit wrote (warnings, errors);
  * `{:exit, status}`: `snakepit run` exited with this status (the
    command's, or 128+N when it was killed by signal N).

  ## Options

  * `:cmd` (required): `[program | args]`; the program is looked up on
    PATH by snakepit;
  * `:run_id`: 7 characters of [0-9a-z] (default: a fresh random one);
  * `:grace`: time between SIGTERM and SIGKILL at teardown (milliseconds
    or a Go duration string; default snakepit's, 5 s);
  * `:limits`: keyword list or map of `memory_max`, `memory_high`,
    `pids_max`, `cpu_max`, `cpu_weight`, `oom_group` (values as snakepit's
    flags take them: `"64M"`, `100`, `"1.5"`, `false`);
  * `:best_effort_limits`: a limit whose controller is unavailable is a
    warning (an `{:snakepit, line}` event) instead of an error;
  * `:ready`: `:notify` (sd_notify `READY=1` on the command's own
    `NOTIFY_SOCKET`);
  * `:ready_line`: ready when a line of the command's stdout matches this
    regular expression (Go RE2 syntax); the line is in `info.ready_line`;
  * `:ready_timeout`: not ready in time: the run is torn down and
    `start_link` returns `{:error, %Error{reason: :not_ready}}`;
  * `:die_with_parent`: passes `--die-with-parent` to `snakepit run` (the
    command gets a parent-death signal; needs a snakepit that has the flag);
  * `:no_cgroup`: POSIX mode (`--no-cgroup`); `:mode`: `:auto`, `:cgroup`
    or `:posix`; `:pid_ns`: `--pid-ns`;
  * `:env`: `[{"NAME", "value" | nil}]` or a map, added to (nil: removed
    from) the environment of the wrapper and so of the command;
  * `:dir`: working directory of the command;
  * `:extra_args`: more `snakepit run` flags, verbatim (a
    `--cgroup-parent` among them is passed on to `snakepit kill` too);
  * `:snakepit`: the snakepit binary (default: `SnakepitJail.snakepit_bin/1`);
  * `:owner`: see above; `:output`: `:log` (default, `Logger.info`),
    `:owner`, `:discard`, or a 1-arity function called with each line;
  * `:start_timeout`: how long `start_link` waits in all (default the
    ready timeout + 10 s, or 60 s); on expiry the run is torn down;
  * `:kill_timeout`: how long a teardown's `snakepit kill` may take beyond
    the grace (default 30 s); then it is SIGKILLed and the Port closed, so
    the wrapper tears the run down (EOF on its stdin);
  * `:name`, and for `child_spec/1`: `:id`, `:restart`, `:shutdown`
    (default grace + 5 s).

  Everything snakepit writes and everything the command writes to stdout
  and stderr arrives on one stream (the Port's); the wrapper's lines are
  told apart by their `snakepit: ` prefix, events by the run ID in them.
  """
  use GenServer
  require Logger

  alias SnakepitJail.Error

  @limit_flags %{
    memory_max: "--memory-max",
    memory_high: "--memory-high",
    pids_max: "--pids-max",
    cpu_max: "--cpu-max",
    cpu_weight: "--cpu-weight",
    oom_group: "--oom-group"
  }
  @max_line 65_536
  @keep_lines 20
  @default_grace_ms 5_000
  @default_kill_timeout 30_000

  @type info :: %{
          run_id: String.t(),
          os_pid: pos_integer,
          wrapper_pid: pos_integer | nil,
          ready_line: String.t() | nil,
          cgroup: String.t() | nil,
          started_at: integer
        }

  # ---------------------------------------------------------------- API

  @doc "A child spec; `:id`, `:restart` and `:shutdown` are taken from the options."
  def child_spec(opts) do
    grace_ms = (opts[:grace] && SnakepitJail.duration_ms(opts[:grace])) || @default_grace_ms

    %{
      id: Keyword.get(opts, :id, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      restart: Keyword.get(opts, :restart, :permanent),
      shutdown: Keyword.get(opts, :shutdown, grace_ms + 5_000),
      type: :worker
    }
  end

  @doc """
  Starts the worker, linked to the caller, and returns once it is ready:
  `{:ok, pid, info}` or `{:error, %SnakepitJail.Error{}}`.

  As with any `start_link`, a failure also sends the caller an exit signal
  (supervisors trap it); use `start/1` for an unlinked worker.
  """
  @spec start_link(keyword) :: {:ok, pid, info} | {:error, Error.t() | term}
  def start_link(opts), do: do_start(:start_link, opts)

  @doc "As `start_link/1`, without a link."
  @spec start(keyword) :: {:ok, pid, info} | {:error, Error.t() | term}
  def start(opts), do: do_start(:start, opts)

  defp do_start(fun, opts) do
    owner = Keyword.get(opts, :owner, self())
    gen_opts = if opts[:name], do: [name: opts[:name]], else: []
    ref = make_ref()

    case apply(GenServer, fun, [
           __MODULE__,
           {opts, owner, {self(), ref}},
           [{:timeout, :infinity} | gen_opts]
         ]) do
      {:ok, pid} ->
        # init/1 sent the info before it returned, so it is here already
        # (no call: the worker may be gone by now, e.g. killed at once).
        receive do
          {^ref, info} -> {:ok, pid, info}
        end

      other ->
        other
    end
  end

  @doc "Run ID, the command's OS PID, the wrapper's OS PID, the ready line, the cgroup."
  @spec info(GenServer.server()) :: info
  def info(server), do: GenServer.call(server, :info)

  @doc "Writes `data` to the command's stdin."
  @spec send_input(GenServer.server(), iodata) :: :ok
  def send_input(server, data), do: GenServer.call(server, {:input, data})

  @doc "Stops the worker and tears its run down gracefully (SIGTERM, grace, SIGKILL)."
  @spec stop(GenServer.server(), timeout) :: :ok
  def stop(server, timeout \\ :infinity), do: GenServer.stop(server, :shutdown, timeout)

  @doc "Tears the run down at once (SIGKILL, no grace), then stops the worker."
  @spec kill(GenServer.server()) :: :ok
  def kill(server) do
    ref = Process.monitor(server)
    :ok = GenServer.call(server, :kill, :infinity)

    receive do
      {:DOWN, ^ref, _, _, _} -> :ok
    end
  end

  # ---------------------------------------------------------------- server

  @impl true
  def init({opts, owner, {caller, ref}}) do
    Process.flag(:trap_exit, true)

    with {:ok, st} <- build(opts, owner),
         {:ok, st} <- open(st),
         {:ok, st} <- await_ready(st) do
      info = public_info(st)
      send(caller, {ref, info})
      notify(st, {:ready, info})
      {:ok, st}
    else
      {:error, err} -> {:stop, err}
    end
  end

  @impl true
  def handle_call(:info, _from, st), do: {:reply, public_info(st), st}

  def handle_call({:input, data}, _from, %{port: port} = st) when port != nil do
    Port.command(port, data)
    {:reply, :ok, st}
  end

  def handle_call({:input, _}, _from, st), do: {:reply, {:error, :closed}, st}

  def handle_call(:kill, _from, st) do
    st = teardown(st, "0s")
    {:stop, :normal, :ok, st}
  end

  @impl true
  def handle_info({port, {:data, data}}, %{port: port} = st) do
    {:noreply, consume(st, data)}
  end

  def handle_info({port, {:exit_status, status}}, %{port: port} = st) do
    st = flush_partial(%{st | port: nil})
    notify(st, {:exit, status})
    reason = if status == 0, do: :normal, else: {:exit_status, status}
    {:stop, reason, st}
  end

  def handle_info({:EXIT, port, _}, %{port: port} = st), do: {:noreply, st}
  def handle_info({:EXIT, other, _}, st) when is_port(other), do: {:noreply, st}
  # A linked process other than the parent died (the parent's exit is
  # handled by gen_server itself): go down with it, tearing the run down.
  def handle_info({:EXIT, _pid, reason}, st), do: {:stop, reason, st}
  def handle_info(_other, st), do: {:noreply, st}

  @impl true
  def terminate(reason, %{port: port} = st) when port != nil do
    grace = if graceful?(reason), do: st.grace, else: "0s"
    teardown(st, grace)
    :ok
  end

  def terminate(_reason, _st), do: :ok

  defp graceful?(:normal), do: true
  defp graceful?(:shutdown), do: true
  defp graceful?({:shutdown, _}), do: true
  defp graceful?(_), do: false

  # ---------------------------------------------------------------- setup

  defp build(opts, owner) do
    with {:ok, cmd} <- fetch_cmd(opts),
         {:ok, bin} <- fetch_bin(opts),
         {:ok, limits} <- limit_flags(opts[:limits] || []),
         {:ok, env} <- env_opt(opts[:env]),
         :ok <- check_dir(opts[:dir]),
         {:ok, output} <- output_opt(Keyword.get(opts, :output, :log)),
         {:ok, ready} <- ready_flags(opts) do
      run_id = opts[:run_id] || SnakepitJail.generate_run_id()
      grace = if opts[:grace], do: SnakepitJail.duration(opts[:grace]), else: nil
      ready_timeout_ms = opts[:ready_timeout] && SnakepitJail.duration_ms(opts[:ready_timeout])

      start_timeout =
        opts[:start_timeout] ||
          if(ready_timeout_ms, do: ready_timeout_ms + 10_000, else: 60_000)

      flags =
        ["--exit-with-stdin", "--ready-fd", "3", "--run-id", to_string(run_id)] ++
          if(grace, do: ["--grace", grace], else: []) ++
          limits ++
          if(opts[:best_effort_limits], do: ["--best-effort-limits"], else: []) ++
          ready ++
          if(opts[:die_with_parent], do: ["--die-with-parent"], else: []) ++
          mode_flags(opts) ++
          if(opts[:pid_ns], do: ["--pid-ns"], else: []) ++
          Enum.map(opts[:extra_args] || [], &to_string/1)

      ready_re =
        case opts[:ready_line] && Regex.compile(opts[:ready_line]) do
          {:ok, re} -> re
          _ -> nil
        end

      {:ok,
       %{
         bin: bin,
         cmd: cmd,
         flags: flags,
         env: env,
         dir: opts[:dir],
         run_id: to_string(run_id),
         kill_flags: cgroup_parent_flags(Enum.map(opts[:extra_args] || [], &to_string/1)),
         kill_timeout:
           (opts[:kill_timeout] && SnakepitJail.duration_ms(opts[:kill_timeout])) ||
             @default_kill_timeout,
         grace: grace,
         grace_ms: (grace && SnakepitJail.duration_ms(grace)) || @default_grace_ms,
         owner: owner,
         output: output,
         start_timeout: start_timeout,
         ready_re: ready_re,
         ready_line: nil,
         port: nil,
         wrapper_pid: nil,
         os_pid: nil,
         buf: "",
         snakepit_lines: [],
         last_lines: [],
         started_at: nil,
         cgroup: nil
       }}
    end
  end

  defp fetch_cmd(opts) do
    case opts[:cmd] do
      [prog | args] when is_binary(prog) and prog != "" ->
        {:ok, [prog | Enum.map(args, &to_string/1)]}

      other ->
        bad("option :cmd must be a non-empty list [program | args], got: #{inspect(other)}")
    end
  end

  defp fetch_bin(opts) do
    case SnakepitJail.snakepit_bin(opts) do
      nil ->
        {:error,
         %Error{
           reason: :no_snakepit,
           message: "snakepit not found (option :snakepit, $SNAKEPIT_BIN, or snakepit on PATH)"
         }}

      bin ->
        if File.regular?(bin),
          do: {:ok, bin},
          else:
            {:error, %Error{reason: :no_snakepit, message: "snakepit binary #{bin}: not found"}}
    end
  end

  defp limit_flags(limits) when is_list(limits) or is_map(limits) do
    Enum.reduce_while(limits, {:ok, []}, fn
      {key, value}, {:ok, acc} when is_map_key(@limit_flags, key) ->
        {:cont, {:ok, acc ++ ["#{@limit_flags[key]}=#{value}"]}}

      {key, _}, _ ->
        known = @limit_flags |> Map.keys() |> Enum.sort() |> Enum.join(", ")
        {:halt, bad("unknown limit #{inspect(key)} (known: #{known})")}

      other, _ ->
        {:halt, bad("a limit is {name, value}, got: #{inspect(other)}")}
    end)
  end

  defp limit_flags(other),
    do: bad("option :limits must be a keyword list or map, got: #{inspect(other)}")

  defp env_opt(nil), do: {:ok, []}

  defp env_opt(env) when is_list(env) or is_map(env) do
    Enum.reduce_while(env, {:ok, []}, fn
      {k, v}, {:ok, acc} when (is_binary(k) or is_atom(k)) and (is_binary(v) or is_nil(v)) ->
        val = if v == nil, do: false, else: String.to_charlist(v)
        {:cont, {:ok, acc ++ [{String.to_charlist(to_string(k)), val}]}}

      other, _ ->
        {:halt, bad("an :env entry is {name, value | nil}, got: #{inspect(other)}")}
    end)
  end

  defp env_opt(other), do: bad("option :env must be a list or map, got: #{inspect(other)}")

  defp check_dir(nil), do: :ok

  defp check_dir(dir) when is_binary(dir) do
    if File.dir?(dir), do: :ok, else: bad("option :dir #{inspect(dir)}: no such directory")
  end

  defp check_dir(other), do: bad("option :dir must be a string, got: #{inspect(other)}")

  defp output_opt(o) when o in [:log, :owner, :discard] or is_function(o, 1), do: {:ok, o}

  defp output_opt(o),
    do: bad("option :output must be :log, :owner, :discard or a function, got: #{inspect(o)}")

  defp ready_flags(opts) do
    ready =
      case opts[:ready] do
        nil -> {:ok, []}
        :notify -> {:ok, ["--ready", "notify"]}
        other -> bad("option :ready must be :notify, got: #{inspect(other)}")
      end

    with {:ok, r} <- ready do
      line = if opts[:ready_line], do: ["--ready-line", to_string(opts[:ready_line])], else: []

      timeout =
        if opts[:ready_timeout],
          do: ["--ready-timeout", SnakepitJail.duration(opts[:ready_timeout])],
          else: []

      {:ok, r ++ line ++ timeout}
    end
  end

  defp mode_flags(opts) do
    cond do
      opts[:no_cgroup] -> ["--no-cgroup"]
      opts[:mode] -> ["--mode", to_string(opts[:mode])]
      true -> []
    end
  end

  # `snakepit kill` finds a run made under a --cgroup-parent only when told
  # that parent too (it searches the known parents).
  defp cgroup_parent_flags(args), do: cgroup_parent_flags(args, [])

  defp cgroup_parent_flags([flag, dir | rest], acc)
       when flag in ["--cgroup-parent", "-cgroup-parent"],
       do: cgroup_parent_flags(rest, ["--cgroup-parent=" <> dir | acc])

  defp cgroup_parent_flags(["--cgroup-parent=" <> dir | rest], acc),
    do: cgroup_parent_flags(rest, ["--cgroup-parent=" <> dir | acc])

  defp cgroup_parent_flags(["-cgroup-parent=" <> dir | rest], acc),
    do: cgroup_parent_flags(rest, ["--cgroup-parent=" <> dir | acc])

  defp cgroup_parent_flags([_ | rest], acc), do: cgroup_parent_flags(rest, acc)
  defp cgroup_parent_flags([], acc), do: Enum.reverse(acc)

  defp bad(msg), do: {:error, %Error{reason: :bad_option, message: msg}}

  # /bin/sh makes fd 3 a copy of stdout, then becomes snakepit: the
  # `READY <runid> <pid>` line of --ready-fd 3 arrives on the Port's stream.
  defp port_args(st) do
    ["-c", ~s(exec "$0" "$@" 3>&1), st.bin, "run" | st.flags ++ ["--" | st.cmd]]
  end

  defp open(st) do
    opts =
      [:binary, :exit_status, :stderr_to_stdout, :use_stdio, :hide, args: port_args(st)] ++
        if(st.env != [], do: [env: st.env], else: []) ++
        if(st.dir, do: [cd: st.dir], else: [])

    try do
      port = Port.open({:spawn_executable, "/bin/sh"}, opts)
      {:os_pid, os_pid} = Port.info(port, :os_pid)

      {:ok,
       %{st | port: port, wrapper_pid: os_pid, started_at: System.monotonic_time(:millisecond)}}
    rescue
      e -> {:error, %Error{reason: :spawn_failed, message: Exception.message(e)}}
    end
  end

  defp await_ready(st) do
    deadline = System.monotonic_time(:millisecond) + st.start_timeout
    await_ready(st, deadline)
  end

  defp await_ready(%{port: port} = st, deadline) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, data}} ->
        st = consume(st, data)
        if st.os_pid, do: await_ready_line(st, deadline), else: await_ready(st, deadline)

      {^port, {:exit_status, status}} ->
        st = flush_partial(%{st | port: nil})
        notify(st, {:exit, status})

        {:error,
         Error.from_exit(
           status,
           Enum.reverse(st.snakepit_lines),
           Enum.reverse(st.last_lines),
           st.run_id
         )}
    after
      remaining ->
        teardown(st, "0s")

        {:error,
         %Error{
           reason: :start_timeout,
           message:
             "not ready within #{st.start_timeout} ms (start_timeout); run #{st.run_id} torn down",
           run_id: st.run_id,
           output: Enum.reverse(st.last_lines)
         }}
    end
  end

  # The wrapper passes the matching line on before it reports ready; should
  # the two arrive in separate reads, wait (briefly) for the line too.
  defp await_ready_line(%{ready_re: nil} = st, _), do: {:ok, with_cgroup(st)}
  defp await_ready_line(%{ready_line: line} = st, _) when line != nil, do: {:ok, with_cgroup(st)}

  defp await_ready_line(%{port: port} = st, deadline) do
    remaining = min(max(deadline - System.monotonic_time(:millisecond), 0), 1_000)

    receive do
      {^port, {:data, data}} -> await_ready_line(consume(st, data), deadline)
    after
      remaining -> {:ok, with_cgroup(st)}
    end
  end

  defp with_cgroup(st) do
    cg =
      case File.read("/proc/#{st.os_pid}/cgroup") do
        {:ok, text} ->
          Enum.find_value(String.split(text, "\n"), fn
            "0::" <> path -> if String.contains?(path, st.run_id), do: path
            _ -> nil
          end)

        _ ->
          nil
      end

    %{st | cgroup: cg}
  end

  defp public_info(st) do
    Map.take(st, [:run_id, :os_pid, :wrapper_pid, :ready_line, :cgroup, :started_at])
  end

  # ---------------------------------------------------------------- output

  defp consume(st, data) do
    buf = st.buf <> data

    {buf, st} =
      if st.os_pid == nil do
        case Regex.run(ready_re(st.run_id), buf, return: :index) do
          [{at, len}, {pat, plen}] ->
            pid = String.to_integer(binary_part(buf, pat, plen))

            rest =
              binary_part(buf, 0, at) <> binary_part(buf, at + len, byte_size(buf) - at - len)

            {rest, %{st | os_pid: pid}}

          nil ->
            {buf, st}
        end
      else
        {buf, st}
      end

    lines(%{st | buf: buf})
  end

  defp ready_re(run_id), do: Regex.compile!("READY #{Regex.escape(run_id)} (\\d+)\\n")

  defp lines(st) do
    case :binary.split(st.buf, "\n") do
      [line, rest] ->
        st = %{st | buf: rest} |> line(line)
        lines(st)

      [partial] ->
        # A READY line may still be on its way behind a partial one: keep
        # what could be its start; flush only overlong partial lines.
        if byte_size(partial) > @max_line and st.os_pid != nil do
          line(%{st | buf: ""}, partial)
        else
          st
        end
    end
  end

  defp flush_partial(%{buf: ""} = st), do: st
  defp flush_partial(st), do: line(%{st | buf: ""}, st.buf)

  defp line(st, line) do
    st = %{st | last_lines: Enum.take([line | st.last_lines], @keep_lines)}

    case line do
      "snakepit: " <> rest ->
        st = %{st | snakepit_lines: Enum.take([line | st.snakepit_lines], @keep_lines)}
        event = classify(rest, st.run_id)
        if elem(event, 0) != :snakepit or st.os_pid != nil, do: log_snakepit(st, line)
        notify(st, event)
        st

      _ ->
        st = maybe_ready_line(st, line)
        deliver(st, line)
        st
    end
  end

  defp classify(rest, run_id) do
    prefix = "run #{run_id}: "

    cond do
      String.starts_with?(rest, prefix <> "out of memory:") -> {:oom, "snakepit: " <> rest}
      String.starts_with?(rest, prefix <> "pids.max") -> {:pids_max, "snakepit: " <> rest}
      true -> {:snakepit, "snakepit: " <> rest}
    end
  end

  defp log_snakepit(st, line), do: Logger.warning("[#{st.run_id}] #{line}")

  defp maybe_ready_line(%{ready_re: re, ready_line: nil} = st, line) when re != nil do
    if Regex.match?(re, line), do: %{st | ready_line: line}, else: st
  end

  defp maybe_ready_line(st, _), do: st

  defp deliver(%{output: :discard}, _), do: :ok
  defp deliver(%{output: :log} = st, line), do: Logger.info("[#{st.run_id}] #{line}")
  defp deliver(%{output: :owner} = st, line), do: notify(st, {:output, line})
  defp deliver(%{output: fun}, line) when is_function(fun, 1), do: fun.(line)

  defp notify(%{owner: nil}, _), do: :ok
  defp notify(%{owner: owner}, event), do: send(owner, {:snakepit_jail, self(), event})

  # ---------------------------------------------------------------- teardown

  # `snakepit kill` tears the run down by its ID (no PID is signalled that
  # could have been reused) and returns when every process is gone; the
  # wrapper then exits with the command's status.
  defp teardown(%{port: nil} = st, _grace), do: st

  defp teardown(st, grace) do
    grace = grace || "#{st.grace_ms}ms"
    grace_ms = SnakepitJail.duration_ms(grace) || st.grace_ms
    {out, code} = snakepit_kill(st, grace, grace_ms + st.kill_timeout)
    now = System.monotonic_time(:millisecond)

    case code do
      0 ->
        st |> await_exit(now + 10_000) |> close_if_open()

      118 ->
        # No such run: gone as asked only if the wrapper has exited (its
        # exit status is here); else the kill looked in the wrong place.
        case await_exit(st, now) do
          %{port: nil} = st ->
            st

          st ->
            Logger.warning("[#{st.run_id}] snakepit kill exited 118: #{String.trim(out)}")
            close_port(st)
        end

      :timeout ->
        Logger.warning(
          "[#{st.run_id}] snakepit kill did not return within #{grace_ms + st.kill_timeout} ms: " <>
            "killed; closing the Port (the wrapper tears the run down on EOF)#{tail(out)}"
        )

        close_port(st)

      code ->
        Logger.warning("[#{st.run_id}] snakepit kill exited #{code}: #{String.trim(out)}")
        st |> await_exit(now + st.grace_ms + 10_000) |> close_if_open()
    end
  end

  # `snakepit kill` through a Port of its own, for its OS PID: a kill that
  # does not return by the deadline is SIGKILLed (a process we started and
  # have not seen exit, so the PID is still its own).
  defp snakepit_kill(st, grace, timeout_ms) do
    opts =
      [:binary, :exit_status, :stderr_to_stdout, :hide] ++
        [args: ["kill", "--grace", grace | st.kill_flags] ++ [st.run_id]] ++
        if(st.env != [], do: [env: st.env], else: [])

    try do
      port = Port.open({:spawn_executable, st.bin}, opts)
      {:os_pid, os_pid} = Port.info(port, :os_pid)
      collect_kill(port, os_pid, [], System.monotonic_time(:millisecond) + timeout_ms)
    rescue
      e -> {Exception.message(e), -1}
    end
  end

  defp collect_kill(port, os_pid, acc, deadline) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, data}} ->
        collect_kill(port, os_pid, [acc | data], deadline)

      {^port, {:exit_status, code}} ->
        {IO.iodata_to_binary(acc), code}
    after
      remaining ->
        # The shell's kill builtin: no kill(1) on PATH needed.
        :os.cmd(~c"kill -KILL #{os_pid}")
        close(port)
        {IO.iodata_to_binary(acc), :timeout}
    end
  end

  defp tail(""), do: ""
  defp tail(out), do: ": " <> String.trim(out)

  # Last resort: the wrapper did not exit in time.
  defp close_if_open(%{port: nil} = st), do: st
  defp close_if_open(st), do: close_port(st)

  defp close_port(st) do
    # EOF on the wrapper's stdin makes it tear down too.
    close(st.port)
    %{st | port: nil}
  end

  # A port whose process has just exited may be closed already.
  defp close(port) do
    Port.close(port)
  rescue
    ArgumentError -> true
  end

  defp await_exit(%{port: port} = st, deadline) do
    remaining = max(deadline - System.monotonic_time(:millisecond), 0)

    receive do
      {^port, {:data, data}} ->
        await_exit(consume(st, data), deadline)

      {^port, {:exit_status, status}} ->
        st = flush_partial(st)
        notify(st, {:exit, status})
        %{st | port: nil}
    after
      remaining -> st
    end
  end
end
