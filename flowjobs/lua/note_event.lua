-- Add one entry to a run's event history (actions taken from outside its steps: a re-run).
-- ARGV[1] (JSON): the run fields (common.lua), and kind (an EventType), step_key, message (or null).
-- Reply: 1, or 0 if there is no such run.
local a = script_args()
if redis.call('EXISTS', a.run_key) == 0 then return 0 end
push_event(a, a.kind, ok(a.step_key), ok(a.message))
return 1
