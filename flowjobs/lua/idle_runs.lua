-- Recovery: which of these active runs has nothing in flight? Pending runs (trigger not started)
-- and Running runs whose every step is final, or is an expanded ForEach (Running, no worker).
-- ARGV[1] (JSON): run_ids [run id]; run_keys, steps_keys, loops_keys: each run's keys, in order.
-- Reply: flat {run_id, status, ...} of the idle ones.
local a = script_args()
local idle = {}
for i, run_id in ipairs(a.run_ids) do
  local status = redis.call('HGET', a.run_keys[i], 'status')
  local quiet = status == 'Pending'
  if status == 'Running' then
    quiet = true
    local statuses = step_statuses({steps_key = a.steps_keys[i]})
    for j = 1, #statuses, 2 do
      local s = statuses[j + 1]
      if not FINAL[s] and not (s == 'Running' and redis.call('HEXISTS', a.loops_keys[i], statuses[j]) == 1) then
        quiet = false
        break
      end
    end
  end
  if quiet then
    idle[#idle + 1] = run_id
    idle[#idle + 1] = status
  end
end
return idle
