-- One round-trip read of a run with every step and attempt.
-- ARGV[1] (JSON): run_key, steps_key, attempts_key.
-- Reply: {run hash, steps hash (every step's status and record fields, common.lua), attempts hash
--   (`<step_key>#<attempt>` -> JSON of an archived attempt, keys.py)}, or false if there is no
--   such run.
local a = script_args()
local run = redis.call('HGETALL', a.run_key)
if #run == 0 then return false end
return {run, redis.call('HGETALL', a.steps_key), redis.call('HGETALL', a.attempts_key)}
