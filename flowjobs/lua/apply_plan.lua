-- Continuation: dispatch ready steps, record skips, and close the run when every step is final.
-- A step that already has a record is never dispatched or skipped again (the dispatch ledger).
-- Returns {dispatched step keys, closed status or false, run status}.
local a = cjson.decode(ARGV[1])
local run_status = redis.call('HGET', a.run_key, 'status')
local dispatched = {}
if run_status ~= 'Running' then return {dispatched, false, run_status or false} end

for _, s in ipairs(a.skip or {}) do
  if redis.call('HSETNX', a.steps_key, s.step_key, 'Skipped') == 1 then
    redis.call('DEL', s.hash_key)
    hset_present(s.hash_key, {
      {'run_id', a.run_id}, {'step_key', s.step_key}, {'step_type', s.step_type}, {'status', 'Skipped'},
      {'error_message', ok(s.reason)}, {'evaluation_trace_json', ok(s.trace)}, {'completed_at', a.now},
      {'attempt_count', 0}})
    push_event(a.events_key, a.run_id, a.now, 'step.skipped', s.step_key, ok(s.reason))
  end
end

for _, d in ipairs(a.dispatch or {}) do
  if redis.call('HSETNX', a.steps_key, d.step_key, 'Pending') == 1 then
    redis.call('DEL', d.hash_key)
    hset_present(d.hash_key, {
      {'run_id', a.run_id}, {'step_key', d.step_key}, {'step_type', d.step_type}, {'status', 'Pending'},
      {'attempt', d.attempt}, {'attempt_count', d.attempt}, {'job_id', d.job_id}, {'dispatched_at', a.now}})
    redis.call('HSET', a.jobs_key, d.job_id, a.run_id)
    redis.call('ZADD', a.pending_key, d.due_ms, d.member)
    dispatched[#dispatched + 1] = d.step_key
  end
end

local closed = false
if a.close then
  local statuses = redis.call('HGETALL', a.steps_key)
  local final = true
  for i = 2, #statuses, 2 do
    if not FINAL[statuses[i]] then final = false break end
  end
  if final then
    for _, key in ipairs(a.close.required) do
      if not FINAL[redis.call('HGET', a.steps_key, key) or ''] then final = false break end
    end
  end
  if final then
    move_run_status(a, a.close.status)
    redis.call('HSET', a.run_key, 'completed_at', a.now)
    push_event(a.events_key, a.run_id, a.now, 'run.completed', nil, a.close.status)
    closed = a.close.status
  end
end
return {dispatched, closed, redis.call('HGET', a.run_key, 'status')}
