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
local run_status = redis.call('HGET', a.run_key, 'status')
if not STEP.claim.run[run_status] then return {'run_not_running', run_status or 'missing'} end
-- One read and one write of the steps hash in the common case: every scan of a large listpack
-- hash costs, so what is already as wanted (the job id, no completed_at) is left alone.
local step = step_get(a, a.step_key, 'status', 'attempt', 'job_id', 'completed_at', 'first_started_at')
local stale = fenced_out(step, STEP.claim, a.attempt)
if stale then return stale end
local first_started = step[5] or a.now_ms
step_set(a, a.step_key, {{'status', STEP.claim.target}, {'started_at', a.now_ms},
  {'lease_until_ms', a.lease_until_ms}, {'worker', a.worker}, {'first_started_at', not step[5] and a.now_ms or nil}})
if job_of(a, a.step_key, a.attempt, step[3]) ~= a.job_id then set_job(a, a.step_key, a.attempt, a.job_id) end
if step[4] then step_del(a, a.step_key, 'completed_at') end
redis.call('ZADD', a.leases_key, a.lease_until_ms, a.member)
redis.call('ZREM', a.pending_key, a.member)
push_event(a, 'step.started', a.step_key, 'attempt ' .. a.attempt)
local refs = {}
for _, r in ipairs(a.refs or {}) do
  refs[#refs + 1] = step_get(a, r, 'status', 'output_json', 'error_message')
end
local extra = {tostring(first_started), false}
if ok(a.loop_item_field) then extra[2] = redis.call('HGET', a.loop_items_key, a.loop_item_field) end
return {'ok', refs, extra, read_state(a, a.scope, a.with_trigger)}
