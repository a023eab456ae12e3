defmodule SnakepitJail do
  @moduledoc """
  Run OS processes from the BEAM under `snakepit run`, so that nothing they
  start outlives them: not double-forked daemons, not `setsid` escapees, not
  the children of a BEAM that was SIGKILLed.

  * `SnakepitJail.Worker`: a GenServer owning one jailed OS process.
  * `SnakepitJail.Pool`: a Supervisor of N workers (example: Python gRPC
    workers, called with `SnakepitJail.GRPC`).
  * `SnakepitJail.Daemon`: a thin client of the snakepit daemon's HTTP API
    on its unix socket.
  """

  @alphabet ~c"0123456789abcdefghijklmnopqrstuvwxyz"

  @doc """
  The snakepit binary: the `:snakepit` option if given, else
  `$SNAKEPIT_BIN`, else the application environment
  (`config :snakepit_jail, snakepit: "/path"`), else `snakepit` on PATH.
  Returns nil when none is found.
  """
  @spec snakepit_bin(keyword) :: String.t() | nil
  def snakepit_bin(opts \\ []) do
    candidate =
      opts[:snakepit] || System.get_env("SNAKEPIT_BIN") ||
        Application.get_env(:snakepit_jail, :snakepit)

    cond do
      is_binary(candidate) and candidate != "" ->
        if String.contains?(candidate, "/"),
          do: Path.expand(candidate),
          else: System.find_executable(candidate)

      true ->
        System.find_executable("snakepit")
    end
  end

  @doc "A fresh random run ID: 7 characters of [0-9a-z]."
  @spec generate_run_id() :: String.t()
  def generate_run_id, do: random_chars(7, [])

  defp random_chars(0, acc), do: List.to_string(acc)

  defp random_chars(n, acc) do
    # Rejection sampling: 252 = 7 * 36, so every character is equally likely.
    case :crypto.strong_rand_bytes(1) do
      <<b>> when b < 252 -> random_chars(n - 1, [Enum.at(@alphabet, rem(b, 36)) | acc])
      _ -> random_chars(n, acc)
    end
  end

  @doc "Whether `id` is a valid run ID (7 characters of [0-9a-z])."
  @spec valid_run_id?(term) :: boolean
  def valid_run_id?(id) when is_binary(id), do: id =~ ~r/\A[0-9a-z]{7}\z/
  def valid_run_id?(_), do: false

  @doc """
  A duration for snakepit's flags: an integer is milliseconds, a string is
  passed as is (a Go duration such as `"1.5s"` or `"500ms"`).
  """
  @spec duration(non_neg_integer | String.t()) :: String.t()
  def duration(ms) when is_integer(ms) and ms >= 0, do: "#{ms}ms"
  def duration(s) when is_binary(s), do: s

  def duration(other),
    do:
      raise(
        ArgumentError,
        "a duration is milliseconds or a Go duration string, got: #{inspect(other)}"
      )

  @doc """
  Milliseconds of a duration given as `duration/1` accepts (a Go duration
  string of the simple forms `300ms`, `2s`, `1.5s`, `1m`, `1m30s`); nil if
  it cannot be read.
  """
  @spec duration_ms(non_neg_integer | String.t()) :: non_neg_integer | nil
  def duration_ms(ms) when is_integer(ms), do: ms

  def duration_ms(s) when is_binary(s) do
    units = %{
      "ns" => 1.0e-6,
      "us" => 1.0e-3,
      "µs" => 1.0e-3,
      "ms" => 1.0,
      "s" => 1.0e3,
      "m" => 6.0e4,
      "h" => 3.6e6
    }

    case Regex.scan(~r/(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/u, s) do
      [] ->
        if s == "0", do: 0, else: nil

      parts ->
        if Enum.map_join(parts, &hd/1) == s do
          parts
          |> Enum.map(fn [_, n, u] -> elem(Float.parse(n), 0) * units[u] end)
          |> Enum.sum()
          |> round()
        end
    end
  end
end
