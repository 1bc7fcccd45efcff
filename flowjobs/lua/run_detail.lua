-- One round-trip read of a run with every step and attempt.
-- Returns {run hash, {step hash...}, attempts hash} or false.
local a = cjson.decode(ARGV[1])
local run = redis.call('HGETALL', a.run_key)
if #run == 0 then return false end
local steps = {}
local keys = redis.call('HKEYS', a.steps_key)
for _, key in ipairs(keys) do steps[#steps + 1] = redis.call('HGETALL', a.step_prefix .. key) end
return {run, steps, redis.call('HGETALL', a.attempts_key)}
