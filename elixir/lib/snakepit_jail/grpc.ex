defmodule SnakepitJail.GRPC do
  @moduledoc """
  A minimal gRPC client over `:gen_tcp` for the demo worker
  (python/examples/grpc_worker.py, service `snakepit.demo.Worker`): one
  unary call per HTTP/2 connection, cleartext (h2c with prior knowledge),
  no dependencies.

      {:ok, reply} = SnakepitJail.GRPC.ping("127.0.0.1", 50051, "hello")
      reply.pid      #=> the worker's OS PID
      reply.run_id   #=> its snakepit run ID

  It covers what the demo needs, not gRPC: request headers are HPACK
  literals, response headers are not decoded (a call succeeds when the
  stream ends with a message), there is no flow control beyond the default
  windows, no compression, no TLS.
  """

  @service "snakepit.demo.Worker"
  @preface "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

  # frame types
  @data 0
  @headers 1
  @rst_stream 3
  @settings 4
  @ping 6
  @goaway 7
  @continuation 9

  @end_stream 0x1
  @end_headers 0x4
  @ack 0x1

  @doc "Ping(payload): `%{payload, pid, run_id, port, uptime_s}`."
  def ping(host, port, payload, timeout \\ 5_000) do
    req = field_bytes(1, payload)

    with {:ok, bin} <- unary(host, port, "/#{@service}/Ping", req, timeout) do
      f = decode(bin)

      {:ok,
       %{
         payload: Map.get(f, 1, ""),
         pid: Map.get(f, 2, 0),
         run_id: Map.get(f, 3, ""),
         port: Map.get(f, 4, 0),
         uptime_s: decode_double(Map.get(f, 5))
       }}
    end
  end

  @doc "Compute(op, n): `%{result, elapsed_us, pid}`."
  def compute(host, port, op, n, timeout \\ 30_000) do
    req = field_bytes(1, op) <> field_varint(2, n)

    with {:ok, bin} <- unary(host, port, "/#{@service}/Compute", req, timeout) do
      f = decode(bin)
      {:ok, %{result: Map.get(f, 1, 0), elapsed_us: Map.get(f, 2, 0), pid: Map.get(f, 3, 0)}}
    end
  end

  @doc "One unary call: the request message's bytes in, the reply message's bytes out."
  def unary(host, port, path, request, timeout) do
    deadline = System.monotonic_time(:millisecond) + timeout
    host_cl = if is_binary(host), do: String.to_charlist(host), else: host

    case :gen_tcp.connect(host_cl, port, [:binary, active: false, nodelay: true], timeout) do
      {:ok, sock} ->
        try do
          authority = "#{host}:#{port}"

          block =
            <<0x83, 0x86>> <>
              literal_indexed(4, path) <>
              literal_indexed(1, authority) <>
              literal_indexed(31, "application/grpc") <>
              literal_new("te", "trailers")

          msg = <<0, byte_size(request)::32>> <> request

          :ok =
            :gen_tcp.send(sock, [
              @preface,
              frame(@settings, 0, 0, ""),
              frame(@headers, @end_headers, 1, block),
              frame(@data, @end_stream, 1, msg)
            ])

          read_response(sock, "", "", deadline)
        after
          :gen_tcp.close(sock)
        end

      {:error, reason} ->
        {:error, {:connect, reason}}
    end
  end

  defp read_response(sock, buf, data, deadline) do
    case next_frame(buf) do
      {:ok, type, flags, stream, payload, rest} ->
        case handle(sock, type, flags, stream, payload, data) do
          {:cont, data} -> read_response(sock, rest, data, deadline)
          {:done, data} -> unwrap(data)
          {:error, _} = err -> err
        end

      :more ->
        remaining = deadline - System.monotonic_time(:millisecond)

        if remaining <= 0 do
          {:error, :timeout}
        else
          case :gen_tcp.recv(sock, 0, remaining) do
            {:ok, more} -> read_response(sock, buf <> more, data, deadline)
            {:error, reason} -> {:error, {:recv, reason}}
          end
        end
    end
  end

  defp handle(sock, @settings, flags, 0, _payload, data) do
    if Bitwise.band(flags, @ack) == 0, do: :gen_tcp.send(sock, frame(@settings, @ack, 0, ""))
    {:cont, data}
  end

  defp handle(sock, @ping, flags, 0, payload, data) do
    if Bitwise.band(flags, @ack) == 0, do: :gen_tcp.send(sock, frame(@ping, @ack, 0, payload))
    {:cont, data}
  end

  defp handle(_sock, @data, flags, 1, payload, data) do
    payload = unpad(flags, payload)
    data = data <> payload
    if Bitwise.band(flags, @end_stream) != 0, do: {:done, data}, else: {:cont, data}
  end

  defp handle(_sock, type, flags, 1, _payload, data) when type in [@headers, @continuation] do
    if Bitwise.band(flags, @end_stream) != 0, do: {:done, data}, else: {:cont, data}
  end

  defp handle(_sock, @rst_stream, _flags, 1, <<code::32>>, _data),
    do: {:error, {:rst_stream, code}}

  defp handle(_sock, @goaway, _flags, 0, <<_::32, code::32, _::binary>>, _),
    do: {:error, {:goaway, code}}

  defp handle(_sock, _type, _flags, _stream, _payload, data), do: {:cont, data}

  # PADDED (0x8): first byte is the pad length.
  defp unpad(flags, <<pad, rest::binary>>) when Bitwise.band(flags, 0x8) != 0,
    do: binary_part(rest, 0, byte_size(rest) - pad)

  defp unpad(_flags, payload), do: payload

  defp unwrap(<<0, len::32, msg::binary-size(len), _::binary>>), do: {:ok, msg}
  defp unwrap(<<1, _::binary>>), do: {:error, :compressed_reply}
  defp unwrap(""), do: {:error, :no_reply_message}
  defp unwrap(_), do: {:error, :malformed_reply}

  defp next_frame(
         <<len::24, type, flags, _::1, stream::31, payload::binary-size(len), rest::binary>>
       ),
       do: {:ok, type, flags, stream, payload, rest}

  defp next_frame(_), do: :more

  defp frame(type, flags, stream, payload) do
    payload = IO.iodata_to_binary(payload)
    <<byte_size(payload)::24, type, flags, 0::1, stream::31, payload::binary>>
  end

  # HPACK: literal header field without indexing, name from the static table.
  defp literal_indexed(index, value), do: hpack_int(index, 4, 0x00) <> hpack_string(value)
  defp literal_new(name, value), do: <<0>> <> hpack_string(name) <> hpack_string(value)
  defp hpack_string(s), do: hpack_int(byte_size(s), 7, 0x00) <> s

  defp hpack_int(v, n, pattern) do
    max = Bitwise.bsl(1, n) - 1

    if v < max do
      <<Bitwise.bor(pattern, v)>>
    else
      <<Bitwise.bor(pattern, max)>> <> hpack_int_rest(v - max)
    end
  end

  defp hpack_int_rest(v) when v < 128, do: <<v>>

  defp hpack_int_rest(v),
    do: <<Bitwise.bor(Bitwise.band(v, 127), 128)>> <> hpack_int_rest(Bitwise.bsr(v, 7))

  # Protocol buffers, the little the demo needs.
  defp field_bytes(n, s), do: varint(Bitwise.bsl(n, 3) + 2) <> varint(byte_size(s)) <> s
  defp field_varint(n, v), do: varint(Bitwise.bsl(n, 3)) <> varint(v)

  defp varint(v) when v < 0, do: varint(v + Bitwise.bsl(1, 64))
  defp varint(v) when v < 128, do: <<v>>
  defp varint(v), do: <<Bitwise.bor(Bitwise.band(v, 127), 128)>> <> varint(Bitwise.bsr(v, 7))

  @doc false
  def decode(bin), do: decode(bin, %{})

  defp decode("", acc), do: acc

  defp decode(bin, acc) do
    {key, rest} = read_varint(bin)
    field = Bitwise.bsr(key, 3)

    case Bitwise.band(key, 7) do
      0 ->
        {v, rest} = read_varint(rest)
        decode(rest, Map.put(acc, field, signed(v)))

      1 ->
        <<v::binary-size(8), rest::binary>> = rest
        decode(rest, Map.put(acc, field, {:fixed64, v}))

      2 ->
        {len, rest} = read_varint(rest)
        <<v::binary-size(len), rest::binary>> = rest
        decode(rest, Map.put(acc, field, v))

      5 ->
        <<v::binary-size(4), rest::binary>> = rest
        decode(rest, Map.put(acc, field, {:fixed32, v}))
    end
  end

  defp read_varint(bin, shift \\ 0, acc \\ 0) do
    <<more::1, v::7, rest::binary>> = bin
    acc = acc + Bitwise.bsl(v, shift)
    if more == 1, do: read_varint(rest, shift + 7, acc), else: {acc, rest}
  end

  defp signed(v) when v >= 0x8000000000000000, do: v - 0x10000000000000000
  defp signed(v), do: v

  defp decode_double({:fixed64, <<f::little-float-64>>}), do: f
  defp decode_double(_), do: 0.0
end
