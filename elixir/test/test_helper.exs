# The tests drive the real snakepit binary on the real cgroupfs, as root.
# test/elixir.sh checks the same prerequisites first (and, outside CI,
# skips with the reason); here a missing one fails the suite outright.
alias SnakepitJail.Test.{Figures, Host}

missing =
  [
    {Host.bin() == nil or not File.regular?(Host.bin()),
     "no snakepit binary (set SNAKEPIT_BIN, or build bin/snakepit)"},
    {System.cmd("id", ["-u"]) != {"0\n", 0}, "not root"},
    {Host.cgroup2_mount() == nil, "no cgroup2 filesystem mounted"},
    {not File.exists?("/usr/bin/python3"), "no /usr/bin/python3"}
  ]
  |> Enum.filter(&elem(&1, 0))
  |> Enum.map(&elem(&1, 1))

if missing != [] do
  IO.puts(:stderr, "snakepit_jail tests: missing prerequisites: " <> Enum.join(missing, "; "))
  System.halt(1)
end

{:ok, _} = Figures.start()
Logger.configure(level: :warning)
ExUnit.after_suite(fn _ -> Figures.report() end)
# A real OOM kill needs the memory controller on the cgroup2 mount (a pure
# cgroup v2 host; this project's VM rig): excluded elsewhere, with this reason.
exclude = if "memory" in Host.root_controllers(), do: [], else: [memory_controller: true]

if exclude != [],
  do:
    IO.puts(
      "snakepit_jail tests: no memory controller on the cgroup2 mount: the real OOM test is excluded"
    )

ExUnit.start(capture_log: true, exclude: exclude)
