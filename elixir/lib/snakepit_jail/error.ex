defmodule SnakepitJail.Error do
  @moduledoc """
  Why a worker could not be started, or why it stopped.

  * `:reason`: an atom naming the case (see below);
  * `:status`: the exit status of `snakepit run`, when it exited;
  * `:message`: snakepit's own message (its `snakepit: ...` lines on
    stderr, verbatim), or ours for errors found before anything ran;
  * `:output`: the last lines the wrapper and the command wrote;
  * `:run_id`: the run ID the worker was given (nil when none was made up).

  Reasons by exit status of `snakepit run` (see the snakepit README), when
  snakepit said why (a `snakepit: ` line):
  2 `:usage`, 117 `:no_cgroup_kill`, 119 `:not_ready`, 120 `:invalid_run_id`,
  121 `:run_id_in_use`, 122 `:cgroup_permission`, 123 `:no_cgroup2`, 124 `:timeout`,
  125 `:snakepit_failure`, 126 `:cannot_execute`, 127 `:not_found`. Any
  other status, or any status without a line of snakepit's, is `:exited`
  (the command itself exited before it was ready, e.g. `exit 2`).
  Found on the BEAM side: `:bad_option`, `:no_snakepit`, `:start_timeout`.
  """
  defexception [:reason, :status, :message, :run_id, output: []]

  @reasons %{
    2 => :usage,
    117 => :no_cgroup_kill,
    119 => :not_ready,
    120 => :invalid_run_id,
    121 => :run_id_in_use,
    122 => :cgroup_permission,
    123 => :no_cgroup2,
    124 => :timeout,
    125 => :snakepit_failure,
    126 => :cannot_execute,
    127 => :not_found
  }

  @doc false
  def reason_for_status(status), do: Map.get(@reasons, status, :exited)

  @doc false
  def from_exit(status, snakepit_lines, output, run_id) do
    # The command's own status may be one of snakepit's (a script's
    # `exit 2`): it is snakepit's only when snakepit said something.
    {reason, msg} =
      case snakepit_lines do
        [] -> {:exited, "snakepit run exited with status #{status} before the worker was ready"}
        lines -> {reason_for_status(status), Enum.join(lines, "\n")}
      end

    %__MODULE__{
      reason: reason,
      status: status,
      message: msg,
      output: output,
      run_id: run_id
    }
  end
end
