-- Extend the lease of a running attempt; 0 when the attempt is no longer current (fenced out).
local a = cjson.decode(ARGV[1])
local step = redis.call('HMGET', a.hash_key, 'status', 'attempt')
if fenced_out(step, 'Running', a.attempt) then return 0 end
redis.call('HSET', a.hash_key, 'lease_until_ms', a.lease_until_ms)
redis.call('ZADD', a.leases_key, a.lease_until_ms, a.member)
return 1
