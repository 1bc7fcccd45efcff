-- Take one token from a flow's webhook token bucket (flowjobs/webhooks/guards.py), atomically:
-- N web processes share the bucket, and a read-then-write from Python would let them all take
-- the last token.
-- ARGV[1] (JSON): bucket_key (Keys.webhook_bucket), rate (tokens added per second, > 0), burst
--   (capacity, >= 1).
-- The clock is Redis's own (TIME), so every web process refills the bucket by the same time.
-- Reply: {allowed (1 or 0), milliseconds until one token is back (0 when allowed)}.
local a = cjson.decode(ARGV[1])
local rate, burst = tonumber(a.rate), tonumber(a.burst)
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local held = redis.call('HMGET', a.bucket_key, 'tokens', 'at_ms')
local tokens = tonumber(held[1]) or burst
local at = tonumber(held[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000)
end
local allowed, wait = 0, 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', a.bucket_key, 'tokens', tostring(tokens), 'at_ms', tostring(math.max(now, at)))
-- A full bucket holds nothing worth keeping: the key goes once it would have refilled.
redis.call('PEXPIRE', a.bucket_key, math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {allowed, wait}
