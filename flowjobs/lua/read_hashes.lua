-- Some fields of many hashes in one call (recovery passes over thousands of records: one command
-- instead of one per hash, which costs the client far more than the server).
-- ARGV[1] (JSON): keys [hash key], fields [field name].
-- Reply: per key, in order, the fields' values in the order given (nil where absent).
local a = cjson.decode(ARGV[1])
local values = {}
for i, key in ipairs(a.keys) do
  values[i] = redis.call('HMGET', key, unpack(a.fields))
end
return values
