-- Trigger job: Pending -> Running, once.
-- ARGV[1] (JSON): the run fields (common.lua), and steps_key, loops_key.
-- Reply: {status before, state (common.lua) of the whole run after the move}, or false if there is
--   no such run.
local a = cjson.decode(ARGV[1])
local before = redis.call('HGET', a.run_key, 'status')
if not before then return false end
if before == 'Pending' then
  move_run_status(a, 'Running')
  push_event(a, 'run.started', nil, nil)
end
return {before, read_state(a, nil, false)}
