-- Items: KEYS: stream key, rewritten items key. ARGV: seqs. Returns, as one JSON
-- text, the rows {id, fields} of the stored ones.
local rows = {}
for _, seq in ipairs(ARGV) do
  local fields = item_get(KEYS[1], KEYS[2], seq)
  if fields then rows[#rows + 1] = {'0-' .. seq, fields} end
end
return cjson.encode(rows)
