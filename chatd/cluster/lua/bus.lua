-- The bus event format, Lua half (the Python half and the format's description:
-- chatd/cluster/codec.py). Prepended to every script that publishes on the bus.

-- A committed message's payload: the head built by codec.committed_head, then the
-- message array {channel, seq, sender, name, text, ts, client_id} and the closing brace.
local function bus_committed(head, message)
  return head .. cjson.encode(message) .. '}'
end

-- A committed timeline item that is not a plain message (another kind, or data):
-- the message array with two more elements, the kind and the data (JSON text as
-- chatd/store/redis.py wrote it, "" = null).
local function bus_item(head, message, kind, data)
  if data == '' then data = 'null' end
  local array = cjson.encode(message)
  return head .. string.sub(array, 1, -2) .. ',' .. cjson.encode(kind) .. ',' .. data .. ']}'
end

-- A presence event written by a script (a reaped node, a resync): no origin session.
local function bus_presence(node, room, user, event)
  return cjson.encode({k = 'presence', n = node, a = {room, user, event, cjson.null}})
end
