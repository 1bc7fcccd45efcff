-- Some fields of many hashes in one call (recovery passes over thousands of records: one command
-- instead of one per hash, which costs the client far more than the server).
-- ARGV[1] (JSON): hash_keys [hash key], fields [per key, its field names].
-- Reply: per key, in order, its fields' values in the order given (nil where absent).
local a = script_args()
local values = {}
for i, key in ipairs(a.hash_keys) do
  values[i] = #a.fields[i] > 0 and hmget_all(key, a.fields[i]) or {}
end
return values
