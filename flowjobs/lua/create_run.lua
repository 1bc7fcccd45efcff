-- FlowClient.commit_trigger: a new run, checked and written in one script, so a refused trigger
-- writes nothing and an accepted one is whole (run hash, indexes, trigger job) or absent.
-- ARGV[1] (JSON): run_id, flow_key, setup (commands, run first: the flow record and pinned
--   manifest when this process has not saved them yet; they are written even if the trigger is
--   refused, as FlowRecords.save_flow would), optional bucket {bucket_key, rate (tokens per second,
--   > 0), burst (capacity, >= 1)}, optional once {once_key, seconds}, optional idempotency
--   {idempotency_key, seconds}, writes (commands: the run hash, its indexes, RQ's enqueue of the
--   trigger job), optional count {count_key, fields: {reply kind: metric field}} (a webhook
--   delivery: its outcome is counted).
-- ARGV[2..]: the commands of setup and writes (common.lua, run_commands).
-- Checks, in this order: the flow enabled; one token from the bucket (N web processes share it,
--   so a read-then-write from Python would let them all take the last one; the clock is Redis's
--   own TIME, so every process refills it by the same time); once's key new (a signed delivery
--   seen before); the idempotency key new.
-- Reply: {'created'} | {'existing', run id of the key's first run} | {'disabled'}
--   | {'rate_limited', milliseconds until a token is back} | {'replayed'}.
local a = script_args()

local function take_token(b)
  local rate, burst = tonumber(b.rate), tonumber(b.burst)
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local held = redis.call('HMGET', b.bucket_key, 'tokens', 'at_ms')
  local tokens = tonumber(held[1]) or burst
  local at = tonumber(held[2]) or now
  if now > at then
    tokens = math.min(burst, tokens + (now - at) * rate / 1000)
  end
  local wait = 0
  if tokens >= 1 then
    tokens = tokens - 1
  else
    wait = math.ceil((1 - tokens) * 1000 / rate)
  end
  redis.call('HSET', b.bucket_key, 'tokens', tostring(tokens), 'at_ms', tostring(math.max(now, at)))
  -- A full bucket holds nothing worth keeping: the key goes once it would have refilled.
  redis.call('PEXPIRE', b.bucket_key, math.ceil((burst - tokens) * 1000 / rate) + 1000)
  return wait
end

local function replied(reply)
  local count = ok(a.count)
  if count then redis.call('HINCRBY', count.count_key, count.fields[reply[1]], 1) end
  return reply
end

run_commands(a.setup)
if redis.call('HGET', a.flow_key, 'is_enabled') == '0' then return replied({'disabled'}) end
local bucket, once, idempotency = ok(a.bucket), ok(a.once), ok(a.idempotency)
if bucket then
  local wait = take_token(bucket)
  if wait > 0 then return replied({'rate_limited', tostring(wait)}) end
end
if once and not redis.call('SET', once.once_key, '1', 'NX', 'EX', once.seconds) then return replied({'replayed'}) end
if idempotency then
  local first = redis.call('GET', idempotency.idempotency_key)
  if first then return replied({'existing', first}) end
  redis.call('SET', idempotency.idempotency_key, a.run_id, 'EX', idempotency.seconds)
end
run_commands(a.writes)
return replied({'created'})
