defmodule SnakepitJail.MixProject do
  use Mix.Project

  # No dependencies on purpose: the library builds offline with Debian's
  # elixir (1.14) and erlang (OTP 25) packages.
  def project do
    [
      app: :snakepit_jail,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      test_timeout: 600_000
    ]
  end

  def application do
    [extra_applications: [:logger, :crypto]]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
