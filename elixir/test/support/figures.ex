defmodule SnakepitJail.Test.Figures do
  @moduledoc false
  # Measured figures (kill to all gone, in ms), printed after the suite and
  # written as JSON to $SNAKEPIT_BEAM_REPORT when set.

  def start, do: Agent.start_link(fn -> [] end, name: __MODULE__)

  def add(mode, what, ms), do: Agent.update(__MODULE__, &(&1 ++ [{mode, what, ms}]))

  def all, do: Agent.get(__MODULE__, & &1)

  def report do
    figures = all()

    if figures != [] do
      IO.puts("\nBEAM pool scenario: time from the kill to all gone")

      for {mode, what, ms} <- figures do
        IO.puts("  #{String.pad_trailing(mode, 7)} #{String.pad_trailing(what, 40)} #{:erlang.float_to_binary(ms / 1, decimals: 1)} ms")
      end

      case System.get_env("SNAKEPIT_BEAM_REPORT") do
        nil -> :ok
        "" -> :ok
        path -> File.write!(path, json(figures))
      end
    end
  end

  defp json(figures) do
    rows =
      Enum.map(figures, fn {mode, what, ms} ->
        ~s(  {"mode": #{inspect(mode)}, "what": #{inspect(what)}, "ms": #{:erlang.float_to_binary(ms / 1, decimals: 2)}})
      end)

    "[\n" <> Enum.join(rows, ",\n") <> "\n]\n"
  end
end
