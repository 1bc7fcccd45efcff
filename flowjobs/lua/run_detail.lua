-- One round-trip read of a run with every step and attempt.
-- ARGV[1] (JSON): run_key, steps_key, step_prefix, attempts_key.
-- Reply: {run hash, {step key, step hash, ...} per step of steps_key (the hash does not repeat its
--   key), attempts hash (`<step_key>#<attempt>` -> JSON of an archived attempt, keys.py)}, or
--   false if there is no such run.
local a = cjson.decode(ARGV[1])
local run = redis.call('HGETALL', a.run_key)
if #run == 0 then return false end
local steps = {}
local keys = redis.call('HKEYS', a.steps_key)
for _, key in ipairs(keys) do
  steps[#steps + 1] = key
  steps[#steps + 1] = redis.call('HGETALL', a.step_prefix .. key)
end
return {run, steps, redis.call('HGETALL', a.attempts_key)}
