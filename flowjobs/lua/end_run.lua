-- Close an active run from outside its steps (run deadline, unplannable run): steps that wait
-- are skipped. The run always leaves the deadline index.
-- ARGV[1] (JSON): the run fields (common.lua), and status (the closing RunStatus), reason (the
--   skipped steps' error message), steps_key, step_prefix, pending_key, loops_key.
-- Reply: the status it closed with, or false if the run was not active (closed or missing).
local a = cjson.decode(ARGV[1])
redis.call('ZREM', a.deadlines_key, a.run_id)
local status = redis.call('HGET', a.run_key, 'status')
if status ~= 'Running' and status ~= 'Pending' then return false end
local statuses = redis.call('HGETALL', a.steps_key)
for i = 1, #statuses, 2 do
  -- Queued and parked steps, and expanded ForEach steps (Running, but holding no worker).
  local waiting = statuses[i + 1] == 'Pending'
    or (statuses[i + 1] == 'Running' and redis.call('HEXISTS', a.loops_key, statuses[i]) == 1)
  if waiting then
    local key = statuses[i]
    redis.call('HSET', a.steps_key, key, 'Skipped')
    redis.call('HSET', a.step_prefix .. key, 'status', 'Skipped', 'error_message', a.reason, 'completed_at', a.now)
    redis.call('ZREM', a.pending_key, a.run_id .. ':' .. key)  -- keys.step_member
    push_event(a, 'step.skipped', key, a.reason)
  end
end
bump_version(a)
move_run_status(a, a.status)
redis.call('HSET', a.run_key, 'completed_at', a.now)
if a.status == 'TimedOut' then redis.call('HSET', a.run_key, 'timed_out_at', a.now) end
push_event(a, 'run.completed', nil, a.status)
return a.status
