-- Close an active run from outside its steps (run deadline, unplannable run): steps that wait
-- are skipped. The run always leaves the deadline index.
-- ARGV[1] (JSON): the run fields (common.lua), and status (the closing RunStatus), reason (the
--   skipped steps' error message, and for Failed the run.completed event's after the status),
--   steps_key, pending_key, loops_key.
-- Reply: the status it closed with, or false if the run was not active (closed or missing).
local a = script_args()
redis.call('ZREM', a.deadlines_key, a.run_id)
local status = redis.call('HGET', a.run_key, 'status')
if not RUN.abort.from[status] then return false end
skip_waiting(a, a.reason)
if a.status == 'TimedOut' then redis.call('HSET', a.run_key, 'timed_out_at', a.now) end
-- A run failed from outside its steps (unplannable) says why; TimedOut says it by its status.
close_run(a, a.status, a.status == 'Failed' and a.reason or nil)
return a.status
