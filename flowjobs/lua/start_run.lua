-- Trigger job: Pending -> Running, once. Returns {status before, status after, step statuses,
-- run hash, loops}, or false if there is no such run.
local a = cjson.decode(ARGV[1])
local before = redis.call('HGET', a.run_key, 'status')
if not before then return false end
if before == 'Pending' then
  move_run_status(a, 'Running')
  push_event(a.events_key, a.run_id, a.now, 'run.started', nil, nil)
end
return {before, redis.call('HGET', a.run_key, 'status'), redis.call('HGETALL', a.steps_key),
  redis.call('HGETALL', a.run_key), redis.call('HGETALL', a.loops_key)}
