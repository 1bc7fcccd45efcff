-- A worker claims one attempt of a step: Pending(attempt) -> Running with a lease.
-- The run hash comes back without `trigger_data_json` unless `with_trigger` (it can be large; a
-- step that does not reference it reads it later only if it needs it).
-- ARGV[1] (JSON): the step fields (common.lua), and job_id, worker, lease_until_ms, refs (step keys
--   of the referenced steps), loop_items_key, loop_item_field (`<loop>.<index>`, or null),
--   with_trigger, scope (common.lua: what the snapshot for planning the continuation reads).
-- Writes started_at (and first_started_at, once) in epoch ms.
-- Optional job_started: the job system's writes of the job's start (rq_jobs.lua), done first.
-- Reply: {'ok', {{status, output_json, error_message} per ref, in order},
--   {first_started_at, loop item JSON or false}, state (common.lua)}
--   | {'run_not_running', run status or 'missing'} | {'stale', '<status>#<attempt>'}.
local a = script_args()
rq_job_started(a.job_started)
-- One read of the run hash and one of the steps hash (the step's record, the referenced steps'
-- views, the snapshot's statuses), one write of each record: every scan of a large listpack hash
-- costs, so what is already as wanted (the job id, no completed_at) is left alone.
local run = run_hash(a, a.with_trigger)
local run_status = run_field(run, 'status')
if not STEP.claim.run[run_status] then return {'run_not_running', run_status or 'missing'} end
local scope = ok(a.scope)
local fields = step_fields(a.step_key, {'status', 'attempt', 'job_id', 'completed_at', 'first_started_at'})
fields[#fields + 1] = EVENTS_TRIMMED
fields[#fields + 1] = LISTENED
local refs = a.refs or {}
for _, r in ipairs(refs) do step_fields(r, STORED_STEP_FIELDS, fields) end
if scope then
  for _, key in ipairs(scope.keys) do fields[#fields + 1] = key end
  fields[#fields + 1] = STEPS_VERSION
end
local values = hmget_all(a.steps_key, fields)
local step = {unpack(values, 1, 5)}
local stale = fenced_out(step, STEP.claim, a.attempt)
if stale then return stale end
note_events_trimmed(a, values[6], values[7])
local first_started = step[5] or a.now_ms
local writes = {{'status', STEP.claim.target}, {'started_at', a.now_ms}, {'lease_until_ms', a.lease_until_ms},
  {'worker', a.worker}, {'first_started_at', not step[5] and a.now_ms or nil}}
if job_of(a, a.step_key, a.attempt, step[3]) ~= a.job_id then
  if a.job_id == plain_job_id(a, a.step_key, a.attempt) then
    step_del(a, a.step_key, 'job_id')
  else
    writes[#writes + 1] = {'job_id', a.job_id}
  end
end
step_set(a, a.step_key, writes)
if step[4] then step_del(a, a.step_key, 'completed_at') end
redis.call('ZADD', a.leases_key, a.lease_until_ms, a.member)
redis.call('ZREM', a.pending_key, a.member)
push_event(a, 'step.started', a.step_key, 'attempt ' .. a.attempt)
local views = {}
local at = 7
for i = 1, #refs do
  views[i] = {unpack(values, at + 1, at + #STORED_STEP_FIELDS)}
  at = at + #STORED_STEP_FIELDS
end
local known = {run = run}
if scope then
  -- The statuses as they are after this claim's write.
  known.scope_values = {}
  for i, key in ipairs(scope.keys) do
    known.scope_values[i] = key == a.step_key and STEP.claim.target or values[at + i]
  end
  known.version = values[at + #scope.keys + 1]
end
local extra = {tostring(first_started), false}
if ok(a.loop_item_field) then extra[2] = redis.call('HGET', a.loop_items_key, a.loop_item_field) end
return {'ok', views, extra, read_state(a, a.scope, a.with_trigger, known)}
