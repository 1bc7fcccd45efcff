-- Record the outcome of the current attempt (fenced by its attempt number), then either make the
-- step final or, with `next`, queue its next attempt; with `plan`, apply the continuation planned
-- ahead in the same call if the run's steps_version is still the plan's.
-- ARGV[1] (JSON): the step fields (common.lua), and status (StepStatus), input_json, output_json,
--   error (each null when absent), jobs_key; optional: next {attempt, job_id, due_ms, event,
--   message}, lease_expired_before_ms (recovery: the lease must not have been renewed since),
--   crashed (the attempt's work-horse died under it, the worker alive: counted in crashed_attempts),
--   park {signals_key, name, expires_at} (WaitForSignal), plan (a continuation with its version;
--   with the status indexes only when it closes the run),
--   scope and loop_items_key (common.lua: the state read back when the plan is not applied),
--   timed_out (the handler ran past the step's timeout: counted, common.lua count_attempt), seen
--   {version, status, cancelled} (the run as the attempt's claim read it).
--   job_ended (optional): the job system's writes of the job's end (rq_jobs.lua), done once the
--   outcome is recorded.
--   ARGV[2..]: the plan's job commands.
-- Reply: {'ok', state (common.lua), false}
--   | {'ok', false, apply_continuation's reply} (the plan was applied)
--   | {'signalled', payload JSON} (park, but the signal was already delivered: nothing written)
--   | {'stale', '<status>#<attempt>'} | {'stale', 'lease renewed'}.
-- With `next` on a run that closed meanwhile, no next attempt is queued: the step is recorded
-- final, a Pending outcome as Skipped.
-- Attempts: the step record holds the latest one. With `next`, the attempt that ended is archived in
-- attempts_key (`<step_key>#<attempt>` -> JSON {status, input_json, output_json, error_message,
-- job_id, started_at, completed_at}) and the step record loses its started_at and completed_at.
-- Step record and attempt times are epoch ms.
local a = script_args()
local plan = ok(a.plan)
-- One read of the steps hash: the step's record and, with a plan, the statuses of the steps it
-- dispatches (its ledger, then checked without a write of its own); the run hash only if the plan
-- version moved since the claim (see `seen`).
local fields = step_fields(a.step_key, {'status', 'attempt', 'lease_until_ms', 'started_at', 'job_id'})
fields[#fields + 1] = STEPS_VERSION
fields[#fields + 1] = EVENTS_TRIMMED
fields[#fields + 1] = LISTENED
for _, d in ipairs(plan and plan.dispatch or {}) do fields[#fields + 1] = d.step_key end
local values = hmget_all(a.steps_key, fields)
local step = {unpack(values, 1, 5)}
local stale = fenced_out(step, STEP.complete, a.attempt)
if stale then return stale end
if a.lease_expired_before_ms then
  if tonumber(step[3] or '0') >= a.lease_expired_before_ms then return {'stale', 'lease renewed'} end
  -- Recovery records an attempt lost with its worker: count them, to stop re-dispatching a poison step.
  redis.call('HINCRBY', a.steps_key, step_field(a.step_key, 'lost_attempts'), 1)
end
-- A work-horse that died under its attempt is the step's doing: counted apart, against a small limit.
if a.crashed then redis.call('HINCRBY', a.steps_key, step_field(a.step_key, 'crashed_attempts'), 1) end
note_events_trimmed(a, values[7], values[8])
-- Every write of the run's status or cancel_requested while a step runs raises the plan version
-- (cancel_run, end_run and retry_step skip or reset steps; a run closes only once every step is
-- final): at the version the claim read, they are as the claim read them.
local version, run_status, cancelled
local seen = ok(a.seen)
if values[6] and seen and version_of(values[6]) == seen.version then
  version, run_status, cancelled = seen.version, seen.status, seen.cancelled
else
  local run = redis.call('HMGET', a.run_key, 'steps_version', 'status', 'cancel_requested')
  version, run_status, cancelled = version_of(values[6], run[1]), run[2], run[3] == '1'
end
local signal = nil
if a.park then
  -- WaitForSignal: a signal delivered before the step parks is consumed instead of parking.
  local raw = redis.call('HGET', a.park.signals_key, a.park.name)
  signal = raw and cjson.decode(raw) or {run_id = a.run_id, signal_name = a.park.name, created_at = a.now}
  if signal.delivered_at then return {'signalled', signal.payload_json or 'null'} end
end
local n = a.next
if n and (not STEP.requeue.run[run_status] or cancelled) then
  -- The run closed (deadline) or is being cancelled: no further attempt; a step that would wait
  -- is skipped.
  n = nil
  if a.status == 'Pending' then
    a.status = 'Skipped'
    a.error = cancelled and REASON.cancelled or (REASON.run_is[1] .. tostring(run_status) .. REASON.run_is[2])
  end
end
if signal and n then
  -- Every step of the run parked on this name is a waiter; one delivery resumes them all.
  signal.waiters = signal.waiters or {}
  signal.waiters[a.step_key] = {attempt = n.attempt, expires_at = a.park.expires_at}
  redis.call('HSET', a.park.signals_key, a.park.name, cjson.encode(signal))
end
count_attempt(a, a.status, step[4], n and n.event == 'step.retried')
redis.call('ZREM', a.leases_key, a.member)
-- The step record changes with one HDEL and one HSET (the HSET goes with the plan's dispatches and
-- the version).
local writes = {}
local drop = {'lease_until_ms', 'worker'}
local set = {{'input_json', ok(a.input_json)}}
if n then
  -- The step moves on: archive the attempt that ended (the step record holds only the latest one).
  redis.call('HSET', a.attempts_key, a.step_key .. '#' .. a.attempt, cjson.encode({
    status = a.status, input_json = ok(a.input_json), output_json = ok(a.output_json),
    error_message = ok(a.error), job_id = job_of(a, a.step_key, a.attempt, step[5]), started_at = step[4],
    completed_at = a.now_ms}))
  drop[#drop + 1] = 'started_at'
  drop[#drop + 1] = 'completed_at'
  set[#set + 1] = {'status', 'Pending'}
  set[#set + 1] = {'attempt', n.attempt}
  set[#set + 1] = {'dispatched_at', a.now_ms}
  set[#set + 1] = {'error_message', ok(a.error)}
  if n.job_id == plain_job_id(a, a.step_key, n.attempt) then
    drop[#drop + 1] = 'job_id'
  else
    set[#set + 1] = {'job_id', n.job_id}
  end
  index_job(a, n.job_id)
  redis.call('ZADD', a.pending_key, n.due_ms, a.member)
  push_event(a, n.event, a.step_key, ok(n.message))
else
  -- The latest attempt is read back from the step record; `no_input` says its input was none (the
  -- step's input_json is then an earlier attempt's, or the ForEach's items).
  if not ok(a.input_json) and redis.call('HEXISTS', a.steps_key, step_field(a.step_key, 'input_json')) == 1 then
    set[#set + 1] = {'no_input', 1}
  end
  set[#set + 1] = {'status', a.status}
  set[#set + 1] = {'completed_at', a.now_ms}
  for _, pair in ipairs({{'output_json', ok(a.output_json)}, {'error_message', ok(a.error)}}) do
    if pair[2] then set[#set + 1] = pair else drop[#drop + 1] = pair[1] end
  end
  bump_version(a, version, writes)
  local kind = 'step.completed'
  if a.status == 'Failed' then kind = 'step.failed' end
  push_event(a, kind, a.step_key, ok(a.error))
end
step_del(a, a.step_key, unpack(drop))
for _, pair in ipairs(set) do
  if pair[2] ~= nil then
    writes[#writes + 1] = step_field(a.step_key, pair[1])
    writes[#writes + 1] = tostring(pair[2])
  end
end
rq_job_ended(a.job_ended)
-- A continuation planned from the claim-time snapshot is applied only if nothing that can change
-- the plan happened since (same version): one round-trip for the common case. One that does not
-- close the run comes without the status indexes (RunWrites._continuation_args), and a cancelled
-- run's continuation closes it: that one is planned again from the state read back (apply_plan).
if plan and version == plan.version and (plan.status_keys or not cancelled) then
  local statuses = {}
  for i, d in ipairs(plan.dispatch or {}) do statuses[d.step_key] = values[8 + i] end
  -- Applied: the caller needs nothing else back.
  return {'ok', false, apply_continuation(plan,
    {run_status = run_status, cancelled = cancelled, statuses = statuses, writes = writes, version = version})}
end
hset_flat(a.steps_key, writes)
return {'ok', read_state(a, a.scope, false), false}
