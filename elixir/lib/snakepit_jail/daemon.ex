defmodule SnakepitJail.Daemon do
  @moduledoc """
  A thin client of the snakepit daemon's HTTP+JSON API (docs/API.md) on its
  unix socket, for BEAM applications on hosts that run the daemon.

      {:ok, run} = SnakepitJail.Daemon.create_run()
      {:ok, w} = SnakepitJail.Daemon.start_worker(run["id"], argv: ["/usr/bin/python3", "worker.py"])
      {:ok, td} = SnakepitJail.Daemon.delete_run(run["id"], grace: "2s")

  Each call is one HTTP/1.1 request on a fresh `:gen_tcp` connection to
  `{:local, socket}`. The socket is the `:socket` option, else
  `$SNAKEPIT_SOCKET`, else /run/snakepit/snakepit.sock. Replies are decoded
  JSON (maps with string keys). An API error is
  `{:error, %{status: 400, code: "invalid_run_id", message: "..."}}`, and a
  transport failure is `{:error, {:connect | :send | :recv, reason}}` (a
  reply that is empty, cut short or not HTTP: `{:recv, :bad_response}`).

  The `:timeout` option (default 60 s) bounds a call. A worker start
  waits at least as long as the daemon may take to answer it (50 s, plus
  the `ready_timeout`, else 30 s, with `ready`), a run's or worker's
  deletion at least the grace + 50 s (the grace unknown: 5 min): a client
  that gave up first would not learn the outcome, and a worker start
  given up is killed by the daemon.

  Runs made this way belong to the daemon, not to the calling BEAM: they
  outlive it until deleted (or until the daemon stops). For workers tied to
  a BEAM process, use `SnakepitJail.Worker`.
  """

  alias SnakepitJail.JSON

  @default_socket "/run/snakepit/snakepit.sock"
  @default_timeout 60_000
  # The daemon's own bounds (docs/API.md, "Limits and timeouts"): a worker
  # start is answered within 50 s, plus its wait for readiness (the
  # ready_timeout, at most 10 min; else the request's 30 s); a DELETE
  # within grace + 40 s (the grace at most 5 min). Plus a margin.
  @start_bound 50_000
  @ready_default 30_000
  @ready_max 600_000
  @delete_bound 40_000
  @grace_max 300_000
  @margin 10_000

  def socket(opts \\ []),
    do: opts[:socket] || System.get_env("SNAKEPIT_SOCKET") || @default_socket

  @doc "`GET /v1/status`."
  def status(opts \\ []), do: request(:get, "/v1/status", nil, opts)

  @doc "`POST /v1/runs`: `body` is `%{}` or `%{id: \"abc1234\"}` (and the jail settings the daemon accepts)."
  def create_run(body \\ %{}, opts \\ []), do: request(:post, "/v1/runs", body, opts)

  @doc "`GET /v1/runs`."
  def list_runs(opts \\ []), do: request(:get, "/v1/runs", nil, opts)

  @doc "`GET /v1/runs/ID`."
  def get_run(id, opts \\ []), do: request(:get, "/v1/runs/#{id}", nil, opts)

  @doc "`GET /v1/runs/ID/stats`."
  def stats(id, opts \\ []), do: request(:get, "/v1/runs/#{id}/stats", nil, opts)

  @doc "`DELETE /v1/runs/ID?grace=G`: tears the run down; returns when it is gone."
  def delete_run(id, opts \\ []),
    do: request(:delete, "/v1/runs/#{id}" <> grace_query(opts), nil, delete_timeout(opts))

  @doc """
  `POST /v1/runs/ID/workers`. `spec`: `argv` (required), `env` (a list of
  `"K=V"` or a map), `dir`, `stdout`, `stderr`.
  """
  def start_worker(id, spec, opts \\ []) do
    spec = Map.new(spec)

    spec =
      case spec do
        %{env: env} when is_map(env) -> %{spec | env: Enum.map(env, fn {k, v} -> "#{k}=#{v}" end)}
        _ -> spec
      end

    request(:post, "/v1/runs/#{id}/workers", spec, start_timeout(spec, opts))
  end

  @doc "`DELETE /v1/runs/ID/workers/WID?grace=G`."
  def stop_worker(id, wid, opts \\ []),
    do:
      request(
        :delete,
        "/v1/runs/#{id}/workers/#{wid}" <> grace_query(opts),
        nil,
        delete_timeout(opts)
      )

  # A worker start waits as long as the daemon may take to answer it.
  defp start_timeout(spec, opts) do
    ready_timeout = spec[:ready_timeout] || spec["ready_timeout"]

    ready =
      cond do
        spec[:ready] || spec["ready"] || ready_timeout ->
          case ready_timeout && SnakepitJail.duration_ms(ready_timeout) do
            ms when is_integer(ms) and ms > 0 -> min(ms, @ready_max)
            _ -> @ready_default
          end

        true ->
          0
      end

    at_least(opts, @start_bound + ready + @margin)
  end

  # A DELETE waits out the teardown's grace.
  defp delete_timeout(opts) do
    grace =
      case opts[:grace] && SnakepitJail.duration_ms(opts[:grace]) do
        ms when is_integer(ms) and ms >= 0 -> ms
        _ -> @grace_max
      end

    at_least(opts, grace + @delete_bound + @margin)
  end

  defp at_least(opts, ms),
    do: Keyword.put(opts, :timeout, max(Keyword.get(opts, :timeout, @default_timeout), ms))

  defp grace_query(opts) do
    case opts[:grace] do
      nil -> ""
      g -> "?grace=" <> URI.encode_www_form(SnakepitJail.duration(g))
    end
  end

  @doc false
  def request(method, path, body, opts) do
    timeout = Keyword.get(opts, :timeout, @default_timeout)
    payload = if body == nil, do: "", else: JSON.encode!(body)

    req = [
      method |> Atom.to_string() |> String.upcase(),
      " ",
      path,
      " HTTP/1.1\r\nHost: snakepit\r\nConnection: close\r\nUser-Agent: snakepit_jail\r\n",
      if(body == nil, do: "", else: "Content-Type: application/json\r\n"),
      "Content-Length: #{byte_size(payload)}\r\n\r\n",
      payload
    ]

    with {:ok, sock} <- connect(socket(opts), timeout) do
      try do
        with :ok <- send_req(sock, req),
             {:ok, raw} <- recv_all(sock, [], System.monotonic_time(:millisecond) + timeout) do
          parse(raw)
        end
      after
        :gen_tcp.close(sock)
      end
    end
  end

  defp connect(path, timeout) do
    case :gen_tcp.connect(
           {:local, String.to_charlist(path)},
           0,
           [:binary, active: false],
           timeout
         ) do
      {:ok, s} -> {:ok, s}
      {:error, r} -> {:error, {:connect, r}}
    end
  end

  defp send_req(sock, req) do
    case :gen_tcp.send(sock, req) do
      :ok -> :ok
      {:error, r} -> {:error, {:send, r}}
    end
  end

  defp recv_all(sock, acc, deadline) do
    case :gen_tcp.recv(sock, 0, max(deadline - System.monotonic_time(:millisecond), 0)) do
      {:ok, data} -> recv_all(sock, [acc | data], deadline)
      {:error, :closed} -> {:ok, IO.iodata_to_binary(acc)}
      {:error, r} -> {:error, {:recv, r}}
    end
  end

  # An empty, cut short or malformed reply is a transport failure.
  defp parse(raw) do
    with [head, body] <- :binary.split(raw, "\r\n\r\n"),
         [status_line | header_lines] <- String.split(head, "\r\n"),
         ["HTTP/1." <> _, code | _] <- String.split(status_line, " ", parts: 3),
         {status, ""} <- Integer.parse(code),
         {:ok, headers} <- parse_headers(header_lines),
         {:ok, body} <- body(headers, body) do
      reply(status, body)
    else
      _ -> {:error, {:recv, :bad_response}}
    end
  end

  defp parse_headers(lines) do
    Enum.reduce_while(lines, {:ok, %{}}, fn l, {:ok, acc} ->
      case String.split(l, ":", parts: 2) do
        [k, v] -> {:cont, {:ok, Map.put(acc, String.downcase(k), String.trim(v))}}
        _ -> {:halt, :error}
      end
    end)
  end

  defp body(%{"transfer-encoding" => "chunked"}, body), do: dechunk(body, [])

  defp body(%{"content-length" => len}, body) do
    case Integer.parse(len) do
      {n, ""} when n >= 0 and byte_size(body) >= n -> {:ok, binary_part(body, 0, n)}
      _ -> :error
    end
  end

  defp body(_, body), do: {:ok, body}

  defp reply(status, body) do
    decoded =
      case JSON.decode(body) do
        {:ok, v} -> v
        {:error, _} -> body
      end

    cond do
      status in 200..299 ->
        {:ok, decoded}

      is_map(decoded) ->
        {:error, %{status: status, code: decoded["code"], message: decoded["error"]}}

      true ->
        {:error, %{status: status, code: nil, message: body}}
    end
  end

  defp dechunk(bin, acc) do
    with [size_line, rest] <- :binary.split(bin, "\r\n"),
         {size, _} when size >= 0 <-
           size_line |> String.split(";") |> hd() |> String.trim() |> Integer.parse(16) do
      case rest do
        _ when size == 0 -> {:ok, IO.iodata_to_binary(Enum.reverse(acc))}
        <<chunk::binary-size(size), "\r\n", rest::binary>> -> dechunk(rest, [chunk | acc])
        _ -> :error
      end
    else
      _ -> :error
    end
  end
end
