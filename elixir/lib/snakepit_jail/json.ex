defmodule SnakepitJail.JSON do
  @moduledoc false
  # The little JSON the daemon client needs (OTP 25 has no json module, and
  # this library takes no dependencies). Objects decode to maps with string
  # keys, null to nil.

  # ------------------------------------------------------------ encode

  def encode!(v), do: IO.iodata_to_binary(enc(v))

  defp enc(nil), do: "null"
  defp enc(true), do: "true"
  defp enc(false), do: "false"
  defp enc(v) when is_atom(v), do: enc(Atom.to_string(v))
  defp enc(v) when is_integer(v), do: Integer.to_string(v)
  defp enc(v) when is_float(v), do: Float.to_string(v)
  defp enc(v) when is_binary(v), do: [?", escape(v, []), ?"]
  defp enc(v) when is_list(v), do: [?[, Enum.map_intersperse(v, ?,, &enc/1), ?]]

  defp enc(%{} = m) do
    pairs = Enum.map_intersperse(m, ?,, fn {k, v} -> [enc(to_string(k)), ?:, enc(v)] end)
    [?{, pairs, ?}]
  end

  defp escape(<<>>, acc), do: Enum.reverse(acc)
  defp escape(<<?", r::binary>>, acc), do: escape(r, ["\\\"" | acc])
  defp escape(<<?\\, r::binary>>, acc), do: escape(r, ["\\\\" | acc])
  defp escape(<<?\n, r::binary>>, acc), do: escape(r, ["\\n" | acc])
  defp escape(<<?\r, r::binary>>, acc), do: escape(r, ["\\r" | acc])
  defp escape(<<?\t, r::binary>>, acc), do: escape(r, ["\\t" | acc])

  defp escape(<<c, r::binary>>, acc) when c < 0x20,
    do: escape(r, [:io_lib.format("\\u~4.16.0b", [c]) | acc])

  defp escape(<<c, r::binary>>, acc), do: escape(r, [c | acc])

  # ------------------------------------------------------------ decode

  def decode(bin) do
    {v, rest} = value(ws(bin))

    case ws(rest) do
      "" -> {:ok, v}
      _ -> {:error, :trailing_data}
    end
  rescue
    _ -> {:error, :invalid_json}
  end

  defp ws(<<c, r::binary>>) when c in [?\s, ?\t, ?\n, ?\r], do: ws(r)
  defp ws(b), do: b

  defp value(<<?{, r::binary>>), do: object(ws(r), %{})
  defp value(<<?[, r::binary>>), do: array(ws(r), [])
  defp value(<<?", r::binary>>), do: string(r, [])
  defp value(<<"true", r::binary>>), do: {true, r}
  defp value(<<"false", r::binary>>), do: {false, r}
  defp value(<<"null", r::binary>>), do: {nil, r}
  defp value(b), do: number(b)

  defp object(<<?}, r::binary>>, acc), do: {acc, r}

  defp object(<<?", r::binary>>, acc) do
    {k, r} = string(r, [])
    <<?:, r::binary>> = ws(r)
    {v, r} = value(ws(r))
    acc = Map.put(acc, k, v)

    case ws(r) do
      <<?,, r::binary>> -> object(ws(r), acc)
      <<?}, r::binary>> -> {acc, r}
    end
  end

  defp array(<<?], r::binary>>, acc), do: {Enum.reverse(acc), r}

  defp array(b, acc) do
    {v, r} = value(b)

    case ws(r) do
      <<?,, r::binary>> -> array(ws(r), [v | acc])
      <<?], r::binary>> -> {Enum.reverse([v | acc]), r}
    end
  end

  defp string(<<?", r::binary>>, acc), do: {acc |> Enum.reverse() |> IO.iodata_to_binary(), r}

  defp string(<<?\\, e, r::binary>>, acc) when e != ?u do
    c = %{?" => ?", ?\\ => ?\\, ?/ => ?/, ?b => ?\b, ?f => ?\f, ?n => ?\n, ?r => ?\r, ?t => ?\t}
    string(r, [Map.fetch!(c, e) | acc])
  end

  defp string(<<"\\u", h::binary-size(4), r::binary>>, acc) do
    hi = String.to_integer(h, 16)

    case r do
      <<"\\u", l::binary-size(4), r2::binary>> when hi in 0xD800..0xDBFF ->
        lo = String.to_integer(l, 16)
        cp = 0x10000 + Bitwise.bsl(hi - 0xD800, 10) + (lo - 0xDC00)
        string(r2, [<<cp::utf8>> | acc])

      _ ->
        string(r, [<<hi::utf8>> | acc])
    end
  end

  defp string(b, acc) do
    # A run of plain bytes at once.
    n = plain(b, 0)

    case n do
      0 -> raise ArgumentError, "bad string"
      _ -> string(binary_part(b, n, byte_size(b) - n), [binary_part(b, 0, n) | acc])
    end
  end

  defp plain(b, n) do
    case b do
      <<_::binary-size(n), c, _::binary>> when c != ?" and c != ?\\ -> plain(b, n + 1)
      _ -> n
    end
  end

  defp number(b) do
    [num | _] = Regex.run(~r/\A-?\d+(\.\d+)?([eE][+-]?\d+)?/, b)
    rest = binary_part(b, byte_size(num), byte_size(b) - byte_size(num))

    v =
      if String.contains?(num, [".", "e", "E"]) do
        {f, ""} = Float.parse(num)
        f
      else
        String.to_integer(num)
      end

    {v, rest}
  end
end
