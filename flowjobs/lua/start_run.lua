-- Trigger job: Pending -> Running, once; or, if the run's flow was disabled since the run was
-- triggered, Pending -> Cancelled (the gate checked at trigger time is checked again here, since
-- the flow can be disabled while the trigger job waits in the queue).
-- ARGV[1] (JSON): the run fields (common.lua), and steps_key, loops_key, loop_items_key,
--   flow_key (the run's flow record), listeners_key (Keys.listeners), and trace: the run span's W3C fields (traceparent,
--   tracestate), stored on the run as it starts (absent when tracing is off).
--   Optional job_started: the job system's writes of the trigger job's start (rq_jobs.lua), done first.
-- Reply: {status before, state (common.lua) of the whole run after the move}, or false if there is
--   no such run.
local a = script_args()
rq_job_started(a.job_started)
-- One read of the run hash and one of the steps hash serve the move, the event and the snapshot:
-- starting writes no step record, and the run hash only as `run` is patched below.
local run = run_hash(a, false)
local before = run_field(run, 'status')
if not before then return false end
local statuses, version, trimmed = step_statuses(a)
note_events_trimmed(a, trimmed)
if RUN.refuse_start.from[before] and redis.call('HGET', a.flow_key, 'is_enabled') == '0' then
  redis.call('HSET', a.run_key, 'cancel_requested', '1', 'cancel_reason', REASON.flow_disabled,
    'cancel_requested_at', a.now)
  close_run(a, RUN.refuse_start.target)
  run = run_hash(a, false)
elseif RUN.start.from[before] then
  local written = {}
  for name, value in pairs(ok(a.trace) or {}) do
    written[#written + 1] = name
    written[#written + 1] = value
  end
  move_run_status(a, RUN.start.target, {before, run_field(run, 'started_score')}, written)
  put_run_field(run, 'status', RUN.start.target)
  for i = 1, #written, 2 do put_run_field(run, written[i], written[i + 1]) end
  note_listeners(a)
  push_event(a, 'run.started', nil, nil)
  count_metric(a, 'runs_started', a.flow_label)
end
return {before, read_state(a, nil, false, {run = run, statuses = statuses, version = version})}
