defmodule SnakepitJail.Test.Figures do
  @moduledoc false
  # Measured figures (kill to all gone, in ms), printed after the suite and
  # written as JSON to $SNAKEPIT_BEAM_REPORT when set.

  def start, do: Agent.start_link(fn -> [] end, name: __MODULE__)

  def add(mode, what, value, unit \\ "ms"),
    do: Agent.update(__MODULE__, &(&1 ++ [{mode, what, value, unit}]))

  def all, do: Agent.get(__MODULE__, & &1)

  def report do
    figures = all()

    if figures != [] do
      IO.puts("\nBEAM pool scenario (figures measured by this run)")

      for {mode, what, v, unit} <- figures do
        IO.puts(
          "  #{String.pad_trailing(mode, 7)} #{String.pad_trailing(what, 44)} #{:erlang.float_to_binary(v / 1, decimals: 1)} #{unit}"
        )
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
      Enum.map(figures, fn {mode, what, v, unit} ->
        ~s(  {"mode": #{inspect(mode)}, "what": #{inspect(what)}, "value": #{:erlang.float_to_binary(v / 1, decimals: 2)}, "unit": #{inspect(unit)}})
      end)

    "[\n" <> Enum.join(rows, ",\n") <> "\n]\n"
  end
end
