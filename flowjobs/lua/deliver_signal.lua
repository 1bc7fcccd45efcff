-- FlowClient.signal: deliver a signal to a run once and, in the same script, resume every step of
-- the run parked on that name (one delivery resumes them all; a step that parks later consumes it).
-- ARGV[1] (JSON): the run fields (common.lua), and signals_key, steps_key, jobs_key, pending_key,
--   loops_key, name, payload_json, declared (a literal signalName of the manifest), open_waits
--   ({key, children}: the steps named by an expression, a ForEach with the names of such children),
--   expected = [{step_key, attempt, job_id, member, commands}]: the waiters the caller read, each
--   with its resume job's RQ enqueue commands (a list: a document has no map keyed by step keys,
--   which could spell a key field's name). ARGV[2..]: those commands.
-- Reply, checked in this order: {'no_run'} | {'already', delivered_at} | {'not_active', status}
--   | {'changed'} (waiters moved since the caller read them: nothing written, read again)
--   | {'unknown'} (undeclared name nobody parked on, and no step named by an expression left to
--   park) | {'resumed', step_key...}
--   | {'kept'} (delivered; no waiter to resume yet).
local a = script_args()
local expected = {}
for _, e in ipairs(a.expected) do expected[e.step_key] = e end

-- True while a step named by an expression may still park, on a name no one can know yet: it has
-- neither ended nor parked (a parked step is a waiter of some signal with its current attempt).
-- A ForEach's children count until it ends; before it expands (no count yet), the loop is open.
local function may_park_later()
  if #a.open_waits == 0 then return false end
  local parked = {}
  local records = redis.call('HGETALL', a.signals_key)
  for i = 2, #records, 2 do
    for key, w in pairs(cjson.decode(records[i]).waiters or {}) do parked[key] = tonumber(w.attempt) end
  end
  local function status(key)
    local step = step_get(a, key, 'status', 'attempt')
    if FINAL[step[1]] then return 'ended' end
    if step[1] == 'Pending' and parked[key] == tonumber(step[2]) then return 'parked' end
    return 'open'
  end
  for _, w in ipairs(a.open_waits) do
    local own = status(w.key)
    if #w.children == 0 then
      if own == 'open' then return true end
    elseif own ~= 'ended' then
      local count = tonumber(redis.call('HGET', a.loops_key, w.key))
      if not count then return true end
      for i = 0, count - 1 do
        for _, child in ipairs(w.children) do
          if status(w.key .. '.' .. i .. '.' .. child) == 'open' then return true end
        end
      end
    end
  end
  return false
end

local status = redis.call('HGET', a.run_key, 'status')
if not status then return {'no_run'} end
local raw = redis.call('HGET', a.signals_key, a.name)
local record = raw and cjson.decode(raw) or nil
if record and record.delivered_at then return {'already', record.delivered_at} end
if not ACTIVE[status] then return {'not_active', status} end
local waiters = (record and record.waiters) or {}
for key, w in pairs(waiters) do
  local e = expected[key]
  if not e or tonumber(e.attempt) ~= tonumber(w.attempt) then return {'changed'} end
end
for key, _ in pairs(expected) do
  if not waiters[key] then return {'changed'} end
end
if not record and not a.declared and not may_park_later() then return {'unknown'} end
record = record or {run_id = a.run_id, signal_name = a.name, created_at = a.now}
record.delivered_at = a.now
record.payload_json = a.payload_json
redis.call('HSET', a.signals_key, a.name, cjson.encode(record))
local resumed = {'resumed'}
for key, e in pairs(expected) do
  local step = step_get(a, key, 'status', 'attempt')
  if step[1] == 'Pending' and tonumber(step[2]) == tonumber(e.attempt) then
    -- Due now: if the resume job were ever lost, recovery finds the step overdue and re-queues it.
    redis.call('ZADD', a.pending_key, a.now_ms, e.member)
    index_job(a, e.job_id)
    run_commands(e.commands)
    resumed[#resumed + 1] = key
  end
end
if #resumed == 1 then return {'kept'} end
return resumed
