-- The bus event format, Lua half (the Python half and the format's description:
-- chatd/cluster/codec.py). Prepended to every script that publishes on the bus.

-- A committed message's payload: the head built by codec.committed_head, then the
-- message array {channel, seq, sender, name, text, ts, client_id} and the closing brace.
local function bus_committed(head, message)
  return head .. cjson.encode(message) .. '}'
end

-- A presence event written by a script (a reaped node, a resync): no origin session.
local function bus_presence(node, room, user, event)
  return cjson.encode({k = 'presence', n = node, a = {room, user, event, cjson.null}})
end
