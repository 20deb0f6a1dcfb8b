-- Items: KEYS: stream key, rewritten items key. ARGV: seqs. Returns, as one JSON
-- text, the item_row()s of the stored ones.
local rows = {}
for _, seq in ipairs(ARGV) do
  local fields = item_get(KEYS[1], KEYS[2], seq)
  if fields then rows[#rows + 1] = item_row(seq, fields) end
end
return cjson.encode(rows)
