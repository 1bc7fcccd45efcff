-- FlowClient.retry_step: a new attempt of a Failed step, queued as its own job in this script. The
-- failed attempt is archived, the step's Skipped descendants are reset (to be planned again) and
-- a closed run returns to Running; the run then closes again, once, as its steps decide. The
-- retried step's counts of attempts lost with their worker and of work-horse crashes start again
-- (complete.lua): an operator's retry is a fresh start for both limits.
-- ARGV[1] (JSON): the step fields (common.lua), and jobs_key, job_id (the new attempt's),
--   clear_cancel (bool), reset [step key] (descendants to reset if Skipped),
--   deadline (null for a run without one): {due_ms, and when the run's deadline has passed
--   timeout_at and deadline_from (the fresh window, flowjobs/control.py)}, applied only if the
--   run reopens (close_run took it off the deadline index).
-- ARGV[2..]: the new job's enqueue commands, as the slice `commands`.
-- Reply: {'retried', new attempt} | {'no_run'} | {'cancelled'} (cancel requested, clear_cancel
--   false) | {'not_failed', '<status>#<attempt>'} (not Failed, or not at the attempt the caller saw).
local a = script_args()
local status = redis.call('HGET', a.run_key, 'status')
if not status then return {'no_run'} end
if redis.call('HGET', a.run_key, 'cancel_requested') == '1' then
  if not a.clear_cancel then return {'cancelled'} end
  redis.call('HSET', a.run_key, 'cancel_requested', '0')
  redis.call('HDEL', a.run_key, 'cancel_reason', 'cancel_requested_at')
end
local step = step_get(a, a.step_key, 'status', 'attempt', 'input_json', 'output_json', 'error_message',
  'job_id', 'started_at', 'completed_at', 'no_input')
if not STEP.retry.from[step[1]] or tonumber(step[2]) ~= a.attempt then
  return {'not_failed', (step[1] or 'missing') .. '#' .. (step[2] or '?')}
end
-- The step record holds the latest attempt only: archive the failed one (as complete.lua does).
local input = step[3]
if step[9] then input = nil end
redis.call('HSET', a.attempts_key, a.step_key .. '#' .. a.attempt, cjson.encode({
  status = 'Failed', input_json = input or nil, output_json = step[4] or nil, error_message = step[5] or nil,
  job_id = job_of(a, a.step_key, a.attempt, step[6]), started_at = step[7] or nil, completed_at = step[8] or nil}))
for _, key in ipairs(a.reset or {}) do
  if STEP.reset.from[redis.call('HGET', a.steps_key, key)] then
    redis.call('HDEL', a.steps_key, key)
    step_clear(a, key)
  end
end
local n = a.attempt + 1
step_del(a, a.step_key, 'started_at', 'completed_at', 'output_json', 'error_message', 'no_input',
  'lost_attempts', 'crashed_attempts')
step_set(a, a.step_key, {{'status', 'Pending'}, {'attempt', n}, {'dispatched_at', a.now_ms}})
set_job(a, a.step_key, n, a.job_id)
index_job(a, a.job_id)
redis.call('ZADD', a.pending_key, a.now_ms, a.member)
run_commands(a.commands)
if RUN.reopen.from[status] then
  if not ACTIVE[status] then redis.call('HDEL', a.run_key, 'completed_at', 'timed_out_at') end
  local deadline = ok(a.deadline)
  if deadline then
    redis.call('ZADD', a.deadlines_key, deadline.due_ms, a.run_id)
    hset_present(a.run_key, {{'timeout_at', deadline.timeout_at}, {'deadline_from', deadline.deadline_from}})
  end
  move_run_status(a, RUN.reopen.target)
end
bump_version(a)
push_event(a, 'step.retried', a.step_key, 'retry requested: attempt ' .. n)
return {'retried', n}
