-- FlowClient.cancel: request cancellation of an active run. Queued and parked steps (and expanded
-- ForEach steps) are skipped at once; steps running on a worker finish, and the continuation of
-- the last of them closes the run as Cancelled (apply_continuation); with none running, the run
-- closes as Cancelled here.
-- ARGV[1] (JSON): the run fields (common.lua), and reason, steps_key, pending_key,
--   loops_key.
-- Reply: {'cancelled', 1 if closed now else 0, {job ids of the skipped queued attempts (and of the
--   trigger job of a Pending run)}} | {'no_run'} | {'not_active', status}.
local a = script_args()
local status = redis.call('HGET', a.run_key, 'status')
if not status then return {'no_run'} end
if not RUN.cancel.from[status] then return {'not_active', status} end
redis.call('HSET', a.run_key, 'cancel_requested', '1', 'cancel_reason', a.reason, 'cancel_requested_at', a.now)
push_event(a, 'run.cancel_requested', nil, a.reason)
local jobs, running = skip_waiting(a, REASON.cancelled)
if status == 'Pending' then jobs[#jobs + 1] = redis.call('HGET', a.run_key, 'background_job_id') end
if running then return {'cancelled', 0, jobs} end
close_run(a, RUN.cancel.target)
return {'cancelled', 1, jobs}
