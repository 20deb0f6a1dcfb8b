-- History: KEYS: stream key, rewritten items key. ARGV: before ("" = newest), limit.
-- Returns, as one JSON text, rows newest first (at most limit + 1).
local top = nil
if ARGV[1] ~= '' then
  top = tonumber(ARGV[1])
  if top <= 1 then return '[]' end
end
return cjson.encode(items_desc(KEYS[1], KEYS[2], top, nil, tonumber(ARGV[2]) + 1))
